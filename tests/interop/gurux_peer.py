"""Test-only adapter around gurux-dlms 1.0.203 (GPLv2): an independent DLMS peer for sac tests.

Gurux is only *called* here, never copied into sac.  Two directions:

* ENCODE (gurux sends): ``gx_aarq``, ``gx_*_request``, ``gx_rlrq``, ``gx_*_response``,
  ``gx_aare``, ``gx_rlre``, ``gx_data_notification``, ``gx_encode_data``, ``gx_xml_to_pdu``.
  They return the raw APDU; ``wrapped=True`` returns gurux's own 8-byte-wrapper frame instead
  (requests: src = client SAP, dst = server SAP; responses and pushes: the reverse).
  Common keyword options (``Opts``): ``client_sap`` (16; 1 for pushes), ``server_sap`` (1),
  ``iid`` (invoke-id-and-priority byte, 0xC1), ``cipher`` (``Cipher``: general-glo-ciphering,
  SC 0x30, suite 0) and ``wrapped``.
* DECODE (gurux receives): ``gx_to_xml``, ``gx_decrypt``, ``gx_decode_data``, ``gx_decode_apdu``.

Typed values (encoder input, decoder output) follow vectors.json: ``{"type": t, "value": v}``
with t the Blue Book name and v: null-data None; boolean bool; bit-string str of "0"/"1";
integer, long, double-long, long64, unsigned, long-unsigned, double-long-unsigned,
long64-unsigned, enum, bcd int (bcd = the raw byte, as gurux has it); float32/float64 float
(exact: gurux prints the IEEE bits); octet-string lowercase hex (encoders also take bytes);
visible-string / utf8-string str; date / time / date-time lowercase hex of the raw 5 / 4 / 12
bytes (encoders also take bytes, or a datetime: gurux writes the deviation from its tzinfo,
naive = the process's local zone); array / structure list of typed values.

``gx_decode_apdu`` returns a flat dict.  Keys, when present: ``service`` (get-request-normal,
get-request-next, get-request-with-list, get-response-normal, get-response-with-datablock,
set-request-normal, set-response-normal, action-request-normal, action-response-normal,
data-notification, aarq, aare, rlrq, rlre, exception-response, ...), ``invoke_id_and_priority``
(byte) and ``invoke_id`` (low nibble), ``class_id``, ``obis`` ("a.b.c.d.e.f"), ``attribute``,
``method``, ``access_selector``, ``access_parameters`` (typed), ``items`` (with-list: dicts of
class_id/obis/attribute), ``value`` (typed: response data, SET value, ACTION parameter or return
data, notification body), ``result`` (int: SET/ACTION/association result),
``data_access_result`` (int), ``block_number``, ``last_block`` (bool), ``raw_data`` (hex),
``long_invoke_id_and_priority``, ``date_time`` (hex or None), ``diagnostic``, ``dlms_version``,
``conformance`` (gurux bit names), ``max_pdu``, ``application_context``, ``mechanism``,
``calling_authentication`` (hex), ``reason``, ``state_error``, ``service_error``, and for
ciphered input ``ciphering`` = {tag, system_title (hex, "" when empty), security_control, ic}.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSSettings, GXDLMSTranslator
from gurux_dlms import enums as E
from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters
from gurux_dlms.GXDLMSNotify import GXDLMSNotify
from gurux_dlms.GXDLMSXmlSettings import GXDLMSXmlSettings
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.objects import GXDLMSProfileGeneric
from gurux_dlms.TranslatorSimpleTags import TranslatorSimpleTags as _Tags
from gurux_dlms.TranslatorStandardTags import TranslatorStandardTags as _StdTags

TypedValue = dict[str, Any]

# --- gurux bug work-arounds (process-wide; they only add missing or broken behaviour) ---
if not hasattr(GXByteBuffer, "integerToHex"):  # _GXCommon.getDate() calls it for XML output
    GXByteBuffer.integerToHex = lambda self, sp, i, n: self.toHex(sp, i, n)  # type: ignore
_GX_UTF = _GXCommon.getUtfString.__func__  # type: ignore[attr-defined]


def _utf_string(cls: Any, buff: Any, info: Any, known_type: bool) -> Any:
    """gurux's getUtfString crashes (uses the ``len`` builtin) when strings are shown as hex."""
    xml = info.xml
    if xml is None or not xml.showStringAsHex:
        return _GX_UTF(cls, buff, info, known_type)
    start, info.xml = buff.position, None
    try:
        value = _GX_UTF(cls, buff, info, known_type)
    finally:
        info.xml = xml
    raw = GXByteBuffer(bytes(buff._data[start : buff.position]))
    if not known_type:
        _GXCommon.getObjectCount(raw)
    xml.appendLine(xml.getDataType(info.type_), None, raw.remaining().hex().upper())
    return value


_GXCommon.getUtfString = classmethod(_utf_string)  # type: ignore[assignment]


class _XmlSettings(GXDLMSXmlSettings):  # xmlToPdu() uses members GXDLMSXmlSettings lacks
    OutputType = property(lambda self: self.outputType)

    def setTime(self, value: Any) -> None:
        self.time = value


# --- typed values -----------------------------------------------------------------------
_tags: dict[int, str] = {}
_StdTags.getDataTypeTags(_tags)  # Blue Book names ("float64," has a stray comma in gurux)
_NAMES = {E.DataType(t - _GXCommon.DATA_TYPE_OFFSET): n.rstrip(",") for t, n in _tags.items()}
_TYPES = {v: k for k, v in _NAMES.items()}
_DATES = (E.DataType.DATE, E.DataType.TIME, E.DataType.DATETIME)
_CONTAINERS = (E.DataType.ARRAY, E.DataType.STRUCTURE)
_tags.clear()
_Tags.getDataTypeTags(_tags)
_XML_TYPES = {name: E.DataType(t - _GXCommon.DATA_TYPE_OFFSET) for t, name in _tags.items()}
_SET = GXDLMSSettings(False, None)  # default (non-Italian) settings for A-XDR leaves


def _raw(value: Any) -> bytes:
    return bytes.fromhex(value) if isinstance(value, str) else bytes(value)


def _gx_leaf(dt: E.DataType, value: Any) -> Any:
    """Plain python value -> the object gurux's _GXCommon.setData expects for ``dt``."""
    if dt in _DATES and not isinstance(value, _dt.datetime):  # gurux parses the raw bytes
        return _GXCommon.getData(_SET, GXByteBuffer(bytes([dt]) + _raw(value)), _GXDataInfo())
    if dt == E.DataType.OCTET_STRING:
        return _raw(value)
    if dt == E.DataType.BITSTRING:  # a GXBitString would be encoded with its length rounded up
        return str(value)
    return value


def gx_encode_data(tv: TypedValue) -> bytes:
    """Typed value -> A-XDR; leaves by gurux ``_GXCommon.setData`` (containers: tag + count)."""
    dt, value = _TYPES[tv["type"]], tv["value"]
    bb = GXByteBuffer()
    if dt in _CONTAINERS:  # gurux's own setArray cannot nest utf8-string, bcd, odd bit-strings
        bb.setUInt8(dt)
        _GXCommon.setObjectCount(len(value), bb)
        return bytes(bb.array()) + b"".join(gx_encode_data(item) for item in value)
    _GXCommon.setData(_SET, bb, dt, _gx_leaf(dt, value))
    out = bytes(bb.array())
    if dt in _DATES and not isinstance(value, _dt.datetime) and out[1:] != _raw(value):
        raise ValueError(f"gurux cannot re-encode {tv['type']} {_raw(value).hex()} exactly")
    return out


def _xml_value(el: ET.Element) -> TypedValue:
    """One gurux SIMPLE_XML data element (hex=False, showStringAsHex=True) -> typed value."""
    dt, v = _XML_TYPES[el.tag], el.get("Value", "")
    value: Any = int(v) if v.lstrip("-").isdigit() else v
    if dt in _CONTAINERS:
        value = [_xml_value(c) for c in el]
    elif dt == E.DataType.NONE:
        value = None
    elif dt == E.DataType.BOOLEAN:
        value = v.lower() == "true"
    elif dt in (E.DataType.FLOAT32, E.DataType.FLOAT64):
        value = struct.unpack(">f" if len(v) == 8 else ">d", bytes.fromhex(v))[0]
    elif dt in (E.DataType.STRING, E.DataType.STRING_UTF8):
        value = bytes.fromhex(v).decode("latin-1" if dt == E.DataType.STRING else "utf-8")
    elif dt in (E.DataType.OCTET_STRING, E.DataType.BITSTRING, *_DATES):
        value = v.replace(" ", "").lower()
    return {"type": _NAMES[dt], "value": value}


def _translator(standard: bool = False) -> GXDLMSTranslator:
    out = E.TranslatorOutputType.STANDARD_XML if standard else E.TranslatorOutputType.SIMPLE_XML
    t = GXDLMSTranslator(out)
    t.hex, t.showStringAsHex, t.omitXmlDeclaration = False, True, True
    return t


def gx_decode_data(axdr: bytes) -> TypedValue:
    """A-XDR bytes -> typed value, decoded by gurux's translator (``dataToXml``)."""
    return _xml_value(ET.fromstring(_translator().dataToXml(GXByteBuffer(bytes(axdr)))))


# --- settings ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Cipher:
    """general-glo-ciphering of the *sender*: suite 0, authenticated and encrypted."""

    key: bytes  # EK
    system_title: bytes  # sender's title (IV = title || IC)
    invocation_counter: int
    ak: bytes | None = None  # default: AK = EK (Italian practice)
    italy: bool = True  # Standard.ITALY: zero-length system title on the wire


class Opts(TypedDict, total=False):
    client_sap: int
    server_sap: int
    iid: int
    cipher: Cipher | None
    wrapped: bool


def _apply(settings: Any, kw: Opts) -> Any:
    iid, cipher = kw.get("iid", 0xC1), kw.get("cipher")
    settings.standard = E.Standard.ITALY
    settings.invokeId = iid & 0x0F
    settings.priority = E.Priority.HIGH if iid & 0x80 else E.Priority.NORMAL
    settings.serviceClass = E.ServiceClass.CONFIRMED if iid & 0x40 else E.ServiceClass.UN_CONFIRMED
    if cipher is not None:
        c = GXCiphering(cipher.system_title)
        c.security = E.Security.AUTHENTICATION_ENCRYPTION
        c.systemTitle, c.invocationCounter = bytes(cipher.system_title), cipher.invocation_counter
        c.blockCipherKey, c.authenticationKey = bytes(cipher.key), bytes(cipher.ak or cipher.key)
        settings.cipher = c
        settings.standard = E.Standard.ITALY if cipher.italy else E.Standard.DLMS
        # a pre-established title + general-protection make gurux use general-glo-ciphering
        settings.preEstablishedSystemTitle = b"\x00" * 8
        settings.proposedConformance |= E.Conformance.GENERAL_PROTECTION
    return settings


def _client(kw: Opts, password: bytes | None = None) -> Any:
    auth = E.Authentication.LOW if password else E.Authentication.NONE
    csap, ssap = kw.get("client_sap", 16), kw.get("server_sap", 1)
    c = GXDLMSClient(True, csap, ssap, auth, password, E.InterfaceType.WRAPPER)
    _apply(c.settings, kw)
    return c


def _server(kw: Opts) -> Any:
    s = GXDLMSSettings(True, None)
    s.clientAddress, s.serverAddress = kw.get("client_sap", 16), kw.get("server_sap", 1)
    s.interfaceType = E.InterfaceType.WRAPPER
    s.setUseLogicalNameReferencing(True)
    return _apply(s, kw)


def strip_wrapper(frame: bytes) -> bytes:
    """Check an 8-byte wrapper header (version 1, length) and return the APDU."""
    version, _src, _dst, length = struct.unpack(">HHHH", bytes(frame[:8]))
    if version != 1 or length != len(frame) - 8:
        raise ValueError(f"bad wrapper header {bytes(frame[:8]).hex()}")
    return bytes(frame[8:])


def _out(frames: list[Any], kw: Opts | None = None) -> bytes:
    """The single frame gurux produced; unwrapped unless kw["wrapped"] (None: as it is)."""
    if len(frames) != 1:
        raise ValueError(f"gurux produced {len(frames)} frames")
    keep = kw is None or kw.get("wrapped")
    return bytes(frames[0]) if keep else strip_wrapper(bytes(frames[0]))


def _quiet(fn: Any, *args: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):  # gurux print()s while (de)ciphering
        return fn(*args)


class _Obj:  # duck-typed COSEM object for GXDLMSClient (any class id, even unknown to gurux)
    def __init__(self, class_id: int, obis: str) -> None:
        self.objectType, self.logicalName, self.name = class_id, obis, obis


# --- ENCODE: requests (gurux client API) ------------------------------------------------
def gx_aarq(password: bytes | None = None, **kw: Unpack[Opts]) -> bytes:
    """AARQ, LN referencing, no ciphering (gurux defaults: conformance 401E5D, PDU FFFF); LLS
    when ``password`` is given."""
    return _out(_client(kw, password).aarqRequest(), kw)


def gx_get_request(class_id: int, obis: str, attribute: int, **kw: Unpack[Opts]) -> bytes:
    """GET-Request-Normal (client.read)."""
    return _out(_quiet(_client(kw).read, _Obj(class_id, obis), attribute), kw)


def gx_get_request_next(block_number: int, **kw: Unpack[Opts]) -> bytes:
    """GET-Request-Next acknowledging ``block_number`` (client.receiverReady)."""
    c = _client(kw)
    c.settings.command, c.settings.blockIndex = E.Command.GET_REQUEST, block_number
    return _out([_quiet(c.receiverReady, E.RequestTypes.DATABLOCK)], kw)


def gx_get_request_with_list(items: list[tuple[int, str, int]], **kw: Unpack[Opts]) -> bytes:
    """GET-Request-With-List of 1..10 (class_id, obis, attribute) (client.readList)."""
    if not 0 < len(items) <= 10:
        raise ValueError("gurux splits lists of more than 10 items into several requests")
    c = _client(kw)
    c.settings.negotiatedConformance |= E.Conformance.MULTIPLE_REFERENCES
    return _out(_quiet(c.readList, [(_Obj(ci, ln), a) for ci, ln, a in items])[0], kw)


def gx_get_request_by_range(
    obis: str, start: _dt.datetime, end: _dt.datetime, **kw: Unpack[Opts]
) -> bytes:
    """Profile-generic buffer, selector 1: restricting object clock 0.0.1.0.0.255 attr 2,
    from/to as gurux encodes datetimes (weekday FF, deviation from tzinfo), all columns."""
    pg = GXDLMSProfileGeneric(obis)
    return _out(_quiet(_client(kw).readRowsByRange, pg, GXDateTime(start), GXDateTime(end)), kw)


def gx_get_request_by_entry(obis: str, first: int, last: int, **kw: Unpack[Opts]) -> bytes:
    """Profile-generic buffer, selector 2: {first, last (0 = newest), columns 1..0 (all)}."""
    count = 0 if last == 0 else last - first + 1
    return _out(_quiet(_client(kw).readRowsByEntry, GXDLMSProfileGeneric(obis), first, count), kw)


def gx_set_request(
    class_id: int, obis: str, attribute: int, value: TypedValue, **kw: Unpack[Opts]
) -> bytes:
    """SET-Request-Normal through the gurux client write path."""
    write = _client(kw)._GXDLMSClient__write  # write() itself wants a typed COSEM object
    data = gx_encode_data(value)  # bytes with type ARRAY are copied by setData as they are
    return _out(_quiet(write, obis, data, E.DataType.ARRAY, class_id, attribute), kw)


def gx_action_request(
    class_id: int, obis: str, method: int, param: TypedValue | None = None, **kw: Unpack[Opts]
) -> bytes:
    """ACTION-Request-Normal (client.method); without ``param`` the flag byte is 00."""
    c = _client(kw)
    if param is not None:
        dt = _TYPES[param["type"]]
        val = gx_encode_data(param) if dt in _CONTAINERS else _gx_leaf(dt, param["value"])
        return _out(_quiet(c.method, _Obj(class_id, obis), method, val, dt), kw)
    desc = GXByteBuffer()  # client.method() refuses no parameter: call the encoder it uses
    desc.setUInt16(class_id)
    desc.set(_GXCommon.logicalNameToBytes(obis))
    desc.setUInt8(method)
    desc.setUInt8(0)
    p = GXDLMSLNParameters(c.settings, 0, E.Command.METHOD_REQUEST, 1, desc, GXByteBuffer(), 0xFF)
    return _out(_quiet(GXDLMS.getLnMessages, p), kw)


def gx_rlrq(**kw: Unpack[Opts]) -> bytes:
    """RLRQ, reason normal (client.releaseRequest)."""
    c = _client(kw)
    c.settings.connected |= ConnectionState.DLMS
    return _out(c.releaseRequest(), kw)


# --- ENCODE: responses (gurux's server-side LN encoder, as GXDLMSLNCommandHandler calls it) -
def _responses(cmd: int, data: bytes, status: int, kw: Opts, max_pdu: int = 0xFFFF) -> list[bytes]:
    s = _server(kw)
    s.maxPduSize = max_pdu
    p = GXDLMSLNParameters(s, kw.get("iid", 0xC1), cmd, 1, None, GXByteBuffer(data), status)
    frames = [bytes(f) for f in _quiet(GXDLMS.getLnMessages, p)]
    return frames if kw.get("wrapped") else [strip_wrapper(f) for f in frames]


def gx_get_response(
    value: TypedValue | None = None, error: int | None = None, **kw: Unpack[Opts]
) -> bytes:
    """GET-Response-Normal with ``value``, or with data-access-result ``error``."""
    data = b"" if value is None else gx_encode_data(value)
    return _out(_responses(E.Command.GET_RESPONSE, data, error or 0, kw))


def gx_get_response_blocks(value: TypedValue, max_pdu: int = 64, **kw: Unpack[Opts]) -> list[bytes]:
    """GET-Response-With-Datablock APDUs (blocks 1..n, raw-data choice) for one large value."""
    return _responses(E.Command.GET_RESPONSE, gx_encode_data(value), 0, kw, max_pdu)


def gx_set_response(result: int = 0, **kw: Unpack[Opts]) -> bytes:
    """SET-Response-Normal with data-access-result ``result``."""
    return _out(_responses(E.Command.SET_RESPONSE, b"", result, kw))


def gx_action_response(
    result: int = 0, value: TypedValue | None = None, **kw: Unpack[Opts]
) -> bytes:
    """ACTION-Response-Normal; with ``value`` the return parameters are ``01 00 <Data>``."""
    data = b"\x00" if value is None else b"\x01\x00" + gx_encode_data(value)
    return _out(_responses(E.Command.METHOD_RESPONSE, data, result, kw))


def gx_aare(
    result: int = 0, diagnostic: int = 0, conformance: int = 0x00501F, max_pdu: int = 0x01F4
) -> bytes:
    """AARE, LN, no ciphering (gurux server-side encoder): result 0 accepted, 1 rejected.

    ``conformance`` is the 24-bit value as on the wire.  The diagnostic is always encoded
    as acse-service-user (A1): gurux cannot emit acse-service-provider (A2).
    """
    s = GXDLMSSettings(True, None)
    s.setUseLogicalNameReferencing(True)
    wire = GXByteBuffer(conformance.to_bytes(3, "big"))  # wire bits -> gurux's bit order
    s.negotiatedConformance = E.Conformance(_GXAPDU.getConformanceToArray(wire))
    s.maxPduSize = max_pdu
    bb = GXByteBuffer()
    _GXAPDU.generateAARE(s, bb, result, diagnostic, None, None, None)
    return bytes(bb.array())


def gx_rlre(reason: str = "Normal") -> bytes:
    """RLRE via xmlToPdu (the RLRE of gurux's server has a wrong length byte)."""
    return gx_xml_to_pdu(f'<ReleaseResponse><Reason Value="{reason}" /></ReleaseResponse>')


def gx_xml_to_pdu(xml: str) -> bytes:
    """GXDLMSTranslator.xmlToPdu of gurux SIMPLE_XML (numbers in hex, as its default output).

    Caveat: it ignores the invoke-id nibble of InvokeIdAndPriority (always 1).
    """
    t = GXDLMSTranslator()
    s = _XmlSettings(t.outputType, t.hex, t.showStringAsHex, t.tagsByName)
    return bytes(t.xmlToPdu(xml, s).array())


def gx_data_notification(
    body: TypedValue,
    long_invoke_id: int = 1,
    date_time: _dt.datetime | bytes | None = None,
    **kw: Unpack[Opts],
) -> bytes:
    """DATA-NOTIFICATION (GXDLMSNotify settings + LN encoder), optionally ciphered.

    ``long_invoke_id`` is the whole u32; ``date_time`` a datetime (gurux writes weekday FF,
    deviation from tzinfo) or the raw 12 bytes (parsed and re-encoded by gurux, checked).
    """
    n = GXDLMSNotify(
        True, kw.get("client_sap", 1), kw.get("server_sap", 1), E.InterfaceType.WRAPPER
    )
    _apply(n.settings, {"iid": 0, **kw})
    n.settings.longInvokeID = 0  # gurux falls back to settings when long_invoke_id == 0
    data = GXByteBuffer(gx_encode_data(body))
    p = GXDLMSLNParameters(
        n.settings, long_invoke_id, E.Command.DATA_NOTIFICATION, 0, None, data, 0xFF
    )
    # generateDataNotificationMessages() copies the time into a new GXDateTime, which loses the
    # weekday and status: give the encoder gurux's own parse of the raw bytes instead.
    raw = isinstance(date_time, bytes | bytearray)
    if date_time is not None:
        p.time = _gx_leaf(E.DataType.DATETIME, date_time) if raw else GXDateTime(date_time)
    out = _out(_quiet(GXDLMS.getLnMessages, p), kw)
    if raw and kw.get("cipher") is None and bytes(date_time) not in out:  # type: ignore[arg-type]
        raise ValueError("gurux did not re-encode the raw date-time exactly")
    return out


# --- DECODE -----------------------------------------------------------------------------
def gx_to_xml(
    apdu: bytes,
    key: bytes | None = None,
    system_title: bytes | None = None,
    ak: bytes | None = None,
    standard: bool = False,
) -> str:
    """GXDLMSTranslator.pduToXml (SIMPLE_XML, or STANDARD_XML); with ``key`` a ciphered APDU's
    plaintext is added as XML comments.  ``system_title`` = sender's (for empty titles)."""
    t = _translator(standard)
    if key is not None:
        t.comments, t.security = True, E.Security.AUTHENTICATION_ENCRYPTION
        t.blockCipherKey, t.authenticationKey = bytes(key), bytes(ak or key)
        if system_title:
            t.systemTitle = t.serverSystemTitle = bytes(system_title)
        t.standard = E.Standard.ITALY
    return str(_quiet(t.pduToXml, bytes(apdu)))


_CIPHERED = {0xDB, 0xDC, *range(0xC8, 0xD0), *range(0xD0, 0xD8)}


def _cipher_header(apdu: bytes) -> dict[str, Any]:
    bb = GXByteBuffer(apdu)
    tag, title = bb.getUInt8(), b""
    if tag in (0xDB, 0xDC):
        n = _GXCommon.getObjectCount(bb)
        title, bb.position = apdu[bb.position : bb.position + n], bb.position + n
    _GXCommon.getObjectCount(bb)
    sc, ic = bb.getUInt8(), bb.getUInt32()
    return {"tag": tag, "system_title": title.hex(), "security_control": sc, "ic": ic}


def gx_decrypt(
    apdu: bytes,
    key: bytes,
    system_title: bytes | None = None,
    ak: bytes | None = None,
    verify: bool = True,
) -> bytes:
    """Plaintext of a glo-/general-glo-ciphered APDU (SC 0x30) by gurux's AES-GCM.

    gurux never checks the GCM tag; with ``verify`` gurux re-encrypts the plaintext (same
    key, title, IC) and the result must equal the input byte for byte.
    """
    apdu, title = bytes(apdu), bytes(system_title or b"")
    s = GXDLMSSettings(False, None)
    s.cipher, s.sourceSystemTitle = GXCiphering(b"\x00" * 8), title or None
    p = AesGcmParameter(0, title or b"\x00" * 8, bytes(key), bytes(ak or key))
    plain = bytes(_quiet(GXCiphering.decrypt, s, p, GXByteBuffer(apdu)))
    if verify:
        h = _cipher_header(apdu)
        e = AesGcmParameter(h["tag"], bytes.fromhex(h["system_title"]) or title, key, ak or key)
        e.security, e.invocationCounter = E.Security(h["security_control"] & 0x30), h["ic"]
        e.ignoreSystemTitle = not h["system_title"]
        if bytes(_quiet(GXCiphering.encrypt, e, plain)) != apdu:
            raise ValueError("GCM tag/ciphertext mismatch (wrong key or title, or tampered)")
    return plain


_SERVICES = {"GetRequestForNextDataBlock": "get-request-next", "ReleaseRequest": "rlrq"}
_SERVICES |= {"GetResponsewithDataBlock": "get-response-with-datablock", "ReleaseResponse": "rlre"}
_SERVICES |= {"AssociationRequest": "aarq", "AssociationResponse": "aare"}
# fmt: off
_INT_FIELDS = {
    "InvokeIdAndPriority": "invoke_id_and_priority", "ClassId": "class_id",
    "AttributeId": "attribute", "MethodId": "method", "AccessSelector": "access_selector",
    "BlockNumber": "block_number", "LongInvokeIdAndPriority": "long_invoke_id_and_priority",
    "AssociationResult": "result", "ACSEServiceUser": "diagnostic",
    "ACSEServiceProvider": "diagnostic", "NegotiatedMaxPduSize": "max_pdu",
    "ProposedMaxPduSize": "max_pdu", "NegotiatedDlmsVersionNumber": "dlms_version",
    "ProposedDlmsVersionNumber": "dlms_version",
}
# fmt: on
_STR_FIELDS = {"ApplicationContextName": "application_context", "MechanismName": "mechanism"}
_DATA_FIELDS = {"Data": "value", "DataValue": "value", "Value": "value"}
_DATA_FIELDS |= {"MethodInvocationParameters": "value", "AccessParameters": "access_parameters"}
_CODES = {  # gurux SIMPLE_XML enumeration name -> number, with gurux's own tables
    "Result": _Tags.value_ofErrorCode,
    "DataAccessError": _Tags.value_ofErrorCode,
    "DataAccessResult": _Tags.value_ofErrorCode,
    "StateError": _Tags.valueofStateError,
    "ServiceError": _Tags.valueOfExceptionServiceError,
    "ReleaseRequest": _Tags.value_ofReleaseRequestReason,
    "ReleaseResponse": _Tags.value_ofReleaseResponseReason,
}
_CODE_KEYS = {"Result": "result", "DataAccessError": "data_access_result"}
_CODE_KEYS |= {"DataAccessResult": "data_access_result"}
_CODE_KEYS |= {"StateError": "state_error", "ServiceError": "service_error"}


def _code(table: str, name: str) -> int | str:
    with contextlib.suppress(Exception):
        return int(name) if name.isdigit() else int(_CODES[table](name))
    return name


def _walk(el: ET.Element, out: dict[str, Any]) -> dict[str, Any]:
    for c in el:
        v = c.get("Value")
        if c.tag in _DATA_FIELDS and len(c):
            out[_DATA_FIELDS[c.tag]] = _xml_value(c[0])
        elif v is None:
            if c.tag.endswith("Conformance"):
                out["conformance"] = [b.get("Name") for b in c]
            elif c.tag == "AttributeDescriptorList":
                out["items"] = [_walk(d, {}) for d in c]
            else:
                _walk(c, out)
        elif c.tag in _INT_FIELDS:
            out[_INT_FIELDS[c.tag]] = int(v)
        elif c.tag in _STR_FIELDS:
            out[_STR_FIELDS[c.tag]] = v
        elif c.tag in _CODE_KEYS:
            out[_CODE_KEYS[c.tag]] = _code(c.tag, v)
        elif c.tag == "Reason":
            out["reason"] = _code(el.tag, v)
        elif c.tag == "InstanceId":
            out["obis"] = ".".join(str(b) for b in bytes.fromhex(v))
        elif c.tag == "LastBlock":
            out["last_block"] = v != "0"
        elif c.tag in ("RawData", "CallingAuthentication"):
            out["raw_data" if c.tag == "RawData" else "calling_authentication"] = v.lower()
        elif c.tag == "DateTime":
            out["date_time"] = v.lower() or None
    return out


def gx_decode_apdu(
    apdu: bytes,
    key: bytes | None = None,
    system_title: bytes | None = None,
    ak: bytes | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """APDU -> flat dict (module docstring) from gurux's XML; ciphered input needs ``key``
    (and ``system_title`` when the frame carries none); see gx_decrypt for ``verify``."""
    apdu, header = bytes(apdu), None
    if apdu[:1] and apdu[0] in _CIPHERED:
        if key is None:
            raise ValueError("ciphered APDU: key required")
        header = _cipher_header(apdu)
        apdu = gx_decrypt(apdu, key, system_title, ak, verify)
    root = ET.fromstring(_quiet(_translator().pduToXml, apdu))
    inner = root[0] if len(root) and root[0].tag.startswith(root.tag) else root
    out = _walk(root, {"service": _SERVICES.get(inner.tag)})
    if out["service"] is None:
        out["service"] = "".join("-" + ch.lower() if ch.isupper() else ch for ch in inner.tag)[1:]
    if "invoke_id_and_priority" in out:
        out["invoke_id"] = out["invoke_id_and_priority"] & 0x0F
    if header is not None:
        out["ciphering"] = header
    return out
