"""ACSE APDUs (AARQ, AARE, RLRQ, RLRE) and the xDLMS Initiate request/response they carry.

The ACSE fields are BER (tag, length, contents); the user-information is an octet string
holding an A-XDR InitiateRequest/InitiateResponse/ConfirmedServiceError, or its ciphered
glo- form (kept as a :class:`~sac.dlms.security.CipheredApdu` for the caller to open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from sac.dlms.axdr import MALFORMED, decode_ber_length, encode_ber_length, encoder
from sac.dlms.security import CipheredApdu, is_ciphered
from sac.dlms.xdlms import ConfirmedServiceError
from sac.errors import DecodeError, EncodeError

__all__ = [
    "AARE",
    "AARQ",
    "RLRE",
    "RLRQ",
    "ApplicationContext",
    "AssociationResult",
    "Conformance",
    "InitiateRequest",
    "InitiateResponse",
    "Mechanism",
    "decode_acse",
    "decode_initiate",
]

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63

_CONTEXT_PREFIX = bytes.fromhex("608574050801")  # joint-iso-ctt(2) country(16) ... context(1)
_MECHANISM_PREFIX = bytes.fromhex("608574050802")
_ACSE_REQUIREMENTS_AUTH = bytes.fromhex("0780")  # bit-string, 7 unused bits, bit 0 set


class ApplicationContext(IntEnum):
    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_CIPHERING = 3
    SHORT_NAME_CIPHERING = 4


class Mechanism(IntEnum):
    LOWEST = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class Conformance(IntFlag):
    """The xDLMS conformance block (24 bits; Green Book bit n is ``1 << (23 - n)``)."""

    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    DELTA_VALUE_ENCODING = 1 << 17
    ATTRIBUTE0_WITH_SET = 1 << 15
    PRIORITY_MGMT = 1 << 14
    ATTRIBUTE0_WITH_GET = 1 << 13
    BLOCK_TRANSFER_WITH_GET = 1 << 12
    BLOCK_TRANSFER_WITH_SET = 1 << 11
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0


# --- xDLMS Initiate -------------------------------------------------------------------------


def _conformance_bytes(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFF:
        raise EncodeError(f"conformance 0x{value:x} is not 24 bits")
    return b"\x5f\x1f\x04\x00" + value.to_bytes(3, "big")


def _conformance_at(buf: bytes, pos: int) -> tuple[Conformance, int]:
    if buf[pos : pos + 4] != b"\x5f\x1f\x04\x00" or pos + 7 > len(buf):
        raise DecodeError("bad conformance block")
    return Conformance(int.from_bytes(buf[pos + 4 : pos + 7], "big")), pos + 7


def _optional_u8(buf: bytes, pos: int) -> tuple[int | None, int]:
    if buf[pos] == 0:
        return None, pos + 1
    return buf[pos + 1], pos + 2


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    proposed_conformance: int
    client_max_receive_pdu_size: int = 0xFFFF
    proposed_dlms_version: int = 6
    dedicated_key: bytes | None = field(default=None, repr=False)
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None

    @encoder
    def to_bytes(self) -> bytes:
        out = bytearray(b"\x01")
        if self.dedicated_key is None:
            out += b"\x00"
        else:
            out += b"\x01" + encode_ber_length(len(self.dedicated_key)) + self.dedicated_key
        out += b"\x00" if self.response_allowed else b"\x01\x00"
        q = self.proposed_quality_of_service
        out += b"\x00" if q is None else bytes((1, q))
        out.append(self.proposed_dlms_version)
        out += _conformance_bytes(self.proposed_conformance)
        out += _u16(self.client_max_receive_pdu_size)
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateRequest:
        if not buf or buf[0] != 0x01:
            raise DecodeError("not an InitiateRequest")
        pos = 1
        key = None
        if buf[pos]:
            n, start = decode_ber_length(buf, pos + 1)
            key = bytes(buf[start : start + n])
            if len(key) != n:
                raise DecodeError("truncated: dedicated key")
            pos = start + n
        else:
            pos += 1
        allowed = True
        if buf[pos]:
            allowed = bool(buf[pos + 1])
            pos += 2
        else:
            pos += 1
        qos, pos = _optional_u8(buf, pos)
        version = buf[pos]
        conformance, pos = _conformance_at(buf, pos + 1)
        if pos + 2 != len(buf):
            raise DecodeError("bad InitiateRequest length")
        max_pdu = int.from_bytes(buf[pos : pos + 2], "big")
        return cls(conformance, max_pdu, version, key, allowed, qos)


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    negotiated_conformance: int
    server_max_receive_pdu_size: int
    negotiated_dlms_version: int = 6
    negotiated_quality_of_service: int | None = None
    vaa_name: int = 0x0007

    @encoder
    def to_bytes(self) -> bytes:
        q = self.negotiated_quality_of_service
        return (
            b"\x08"
            + (b"\x00" if q is None else bytes((1, q)))
            + bytes((self.negotiated_dlms_version,))
            + _conformance_bytes(self.negotiated_conformance)
            + _u16(self.server_max_receive_pdu_size)
            + _u16(self.vaa_name)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateResponse:
        if not buf or buf[0] != 0x08:
            raise DecodeError("not an InitiateResponse")
        qos, pos = _optional_u8(buf, 1)
        version = buf[pos]
        conformance, pos = _conformance_at(buf, pos + 1)
        if pos + 4 != len(buf):
            raise DecodeError("bad InitiateResponse length")
        max_pdu = int.from_bytes(buf[pos : pos + 2], "big")
        vaa = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        return cls(conformance, max_pdu, version, qos, vaa)


def decode_initiate(buf: bytes) -> InitiateRequest | InitiateResponse | ConfirmedServiceError:
    """An unciphered user-information payload (after the glo- form has been opened)."""
    try:
        if not buf:
            raise DecodeError("empty user-information")
        if buf[0] == 0x01:
            return InitiateRequest.from_bytes(buf)
        if buf[0] == 0x08:
            return InitiateResponse.from_bytes(buf)
        if buf[0] == 0x0E and len(buf) == 4:
            return ConfirmedServiceError(buf[1], buf[2], buf[3])
        raise DecodeError(f"user-information 0x{buf[0]:02x} is not an Initiate APDU")
    except IndexError:
        raise DecodeError("truncated Initiate APDU") from None


def _u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"{value} is not a u16")
    return value.to_bytes(2, "big")


# --- BER helpers ----------------------------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_ber_length(len(content)) + content


def _tlvs(buf: bytes, pos: int, end: int) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    while pos < end:
        tag = buf[pos]
        n, start = decode_ber_length(buf, pos + 1)
        pos = start + n
        if pos > end:
            raise DecodeError(f"ACSE field 0x{tag:02x} runs past the APDU")
        if tag in fields:
            raise DecodeError(f"ACSE field 0x{tag:02x} repeated")
        fields[tag] = bytes(buf[start:pos])
    return fields


def _context_name(value: int, prefix: bytes) -> bytes:
    return _tlv(0x06, prefix + bytes((value,)))


def _oid_value(content: bytes, prefix: bytes, what: str) -> int:
    if len(content) != 7 or not content.startswith(prefix):
        raise DecodeError(f"unknown {what} {content.hex()}")
    return content[6]


def _wrapped_oid(content: bytes, prefix: bytes, what: str) -> int:
    if len(content) < 2 or content[0] != 0x06 or content[1] != len(content) - 2:
        raise DecodeError(f"bad {what}")
    return _oid_value(content[2:], prefix, what)


def _ap_title(title: bytes) -> bytes:
    return _tlv(0x04, title)


def _unwrap_octets(content: bytes, what: str) -> bytes:
    if len(content) < 2 or content[0] != 0x04:
        raise DecodeError(f"{what} is not an octet string")
    n, start = decode_ber_length(content, 1)
    if start + n != len(content):
        raise DecodeError(f"bad {what} length")
    return content[start:]


def _user_information(payload: Any) -> bytes:
    raw = payload.to_bytes()
    return _tlv(0xBE, _tlv(0x04, raw))


def _decode_user_information(content: bytes) -> Any:
    raw = _unwrap_octets(content, "user-information")
    if raw and is_ciphered(raw[0]):
        return CipheredApdu.from_bytes(raw)
    return decode_initiate(raw)


def _integer(content: bytes) -> int:
    if len(content) < 3 or content[0] != 0x02 or content[1] != len(content) - 2:
        raise DecodeError("bad INTEGER")
    return int.from_bytes(content[2:], "big", signed=True)


def _auth_value(content: bytes) -> bytes:
    # Authentication-value CHOICE: [0] charstring (0x80) or [1] bitstring (0x81)
    if len(content) < 2 or content[0] not in (0x80, 0x81):
        raise DecodeError("bad authentication value")
    n, start = decode_ber_length(content, 1)
    if start + n != len(content):
        raise DecodeError("bad authentication value length")
    return content[start:]


# --- the APDUs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AARQ:
    user_information: InitiateRequest | CipheredApdu | None
    application_context: ApplicationContext | int = ApplicationContext.LOGICAL_NAME
    calling_ap_title: bytes | None = None
    mechanism: Mechanism | int | None = None
    calling_authentication_value: bytes | None = field(default=None, repr=False)

    @encoder
    def to_bytes(self) -> bytes:
        body = _tlv(0xA1, _context_name(self.application_context, _CONTEXT_PREFIX))
        if self.calling_ap_title is not None:
            body += _tlv(0xA6, _ap_title(self.calling_ap_title))
        if self.mechanism is not None:
            body += _tlv(0x8A, _ACSE_REQUIREMENTS_AUTH)
            body += _tlv(0x8B, _MECHANISM_PREFIX + bytes((self.mechanism,)))
            if self.calling_authentication_value is not None:
                body += _tlv(0xAC, _tlv(0x80, self.calling_authentication_value))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return _tlv(AARQ_TAG, body)

    @classmethod
    def from_fields(cls, f: dict[int, bytes]) -> AARQ:
        if 0xA1 not in f:
            raise DecodeError("AARQ without application-context-name")
        context = _wrapped_oid(f[0xA1], _CONTEXT_PREFIX, "application context")
        title = _unwrap_octets(f[0xA6], "calling-AP-title") if 0xA6 in f else None
        mechanism = _oid_value(f[0x8B], _MECHANISM_PREFIX, "mechanism") if 0x8B in f else None
        auth = _auth_value(f[0xAC]) if 0xAC in f else None
        info = _decode_user_information(f[0xBE]) if 0xBE in f else None
        return cls(info, _known(ApplicationContext, context), title, mechanism, auth)


@dataclass(frozen=True, slots=True)
class AARE:
    result: AssociationResult | int
    diagnostic: int
    user_information: InitiateResponse | ConfirmedServiceError | CipheredApdu | None
    application_context: ApplicationContext | int = ApplicationContext.LOGICAL_NAME
    diagnostic_source: int = 1  # 1 = acse-service-user, 2 = acse-service-provider
    responding_ap_title: bytes | None = None
    mechanism: Mechanism | int | None = None
    responding_authentication_value: bytes | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.result == AssociationResult.ACCEPTED

    @encoder
    def to_bytes(self) -> bytes:
        source = 0xA1 if self.diagnostic_source == 1 else 0xA2
        body = (
            _tlv(0xA1, _context_name(self.application_context, _CONTEXT_PREFIX))
            + _tlv(0xA2, _tlv(0x02, bytes((int(self.result),))))
            + _tlv(0xA3, _tlv(source, _tlv(0x02, bytes((self.diagnostic,)))))
        )
        if self.responding_ap_title is not None:
            body += _tlv(0xA4, _ap_title(self.responding_ap_title))
        if self.mechanism is not None:
            body += _tlv(0x88, _ACSE_REQUIREMENTS_AUTH)
            body += _tlv(0x89, _MECHANISM_PREFIX + bytes((self.mechanism,)))
            if self.responding_authentication_value is not None:
                body += _tlv(0xAA, _tlv(0x80, self.responding_authentication_value))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return _tlv(AARE_TAG, body)

    @classmethod
    def from_fields(cls, f: dict[int, bytes]) -> AARE:
        for tag, name in ((0xA1, "application-context-name"), (0xA2, "result"), (0xA3, "diag")):
            if tag not in f:
                raise DecodeError(f"AARE without {name}")
        context = _wrapped_oid(f[0xA1], _CONTEXT_PREFIX, "application context")
        result = _integer(f[0xA2])
        diag = f[0xA3]
        if len(diag) < 2 or diag[0] not in (0xA1, 0xA2):
            raise DecodeError("bad result-source-diagnostic")
        diagnostic = _integer(diag[2:])
        title = _unwrap_octets(f[0xA4], "responding-AP-title") if 0xA4 in f else None
        mechanism = _oid_value(f[0x89], _MECHANISM_PREFIX, "mechanism") if 0x89 in f else None
        auth = _auth_value(f[0xAA]) if 0xAA in f else None
        info = _decode_user_information(f[0xBE]) if 0xBE in f else None
        return cls(
            _known(AssociationResult, result),
            diagnostic,
            info,
            _known(ApplicationContext, context),
            1 if diag[0] == 0xA1 else 2,
            title,
            mechanism,
            auth,
        )


@dataclass(frozen=True, slots=True)
class RLRQ:
    reason: int | None = 0
    user_information: InitiateRequest | CipheredApdu | None = None

    @encoder
    def to_bytes(self) -> bytes:
        body = b"" if self.reason is None else _tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return _tlv(RLRQ_TAG, body)

    @classmethod
    def from_fields(cls, f: dict[int, bytes]) -> RLRQ:
        reason = _reason(f)
        info = _decode_user_information(f[0xBE]) if 0xBE in f else None
        return cls(reason, info)


@dataclass(frozen=True, slots=True)
class RLRE:
    reason: int | None = 0
    user_information: InitiateResponse | CipheredApdu | None = None

    @encoder
    def to_bytes(self) -> bytes:
        body = b"" if self.reason is None else _tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return _tlv(RLRE_TAG, body)

    @classmethod
    def from_fields(cls, f: dict[int, bytes]) -> RLRE:
        reason = _reason(f)
        info = _decode_user_information(f[0xBE]) if 0xBE in f else None
        return cls(reason, info)


def _reason(f: dict[int, bytes]) -> int | None:
    if 0x80 not in f:
        return None
    if len(f[0x80]) != 1:
        raise DecodeError("bad release reason")
    return f[0x80][0]


def _known(enum: type[IntEnum], value: int) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


_ACSE: dict[int, type[AARQ] | type[AARE] | type[RLRQ] | type[RLRE]] = {
    AARQ_TAG: AARQ,
    AARE_TAG: AARE,
    RLRQ_TAG: RLRQ,
    RLRE_TAG: RLRE,
}


def decode_acse(buf: bytes) -> AARQ | AARE | RLRQ | RLRE:
    if not buf or buf[0] not in _ACSE:
        raise DecodeError("not an ACSE APDU")
    try:
        n, start = decode_ber_length(buf, 1)
        if start + n != len(buf):
            raise DecodeError(f"ACSE APDU announces {n} bytes, {len(buf) - start} are there")
        return _ACSE[buf[0]].from_fields(_tlvs(buf, start, len(buf)))
    except MALFORMED as exc:
        raise DecodeError(f"malformed ACSE APDU: {exc}") from None
