"""Benchmark inputs and independent peer decoders for the codec benchmark.

Inputs are built by hand with `cryptography`'s AESGCM (no DLMS library): a CF47 push
(DATA-NOTIFICATION, docs/uni-ts-11291.md §2.3, §2.4) and a GET-Response-Normal register read,
each in a wrapper frame (src wPort 1, dst wPort 1) carrying general-glo-ciphering (SC 0x30,
AK = EK = key).

Peers, each `(frame) -> value`, doing "wrapper -> decrypt -> parse APDU -> value":
- dlms-cosem 25.1.0 (BSL 1.1: benchmark use only, API calls only, no code copied);
- gurux-dlms 1.0.203 (GPLv2: test/benchmark use only);
- `raw_decrypt`: AES-GCM alone on fixed offsets, the lower bound.

Run `python benchmarks/peers.py` for the self-check and single-core rates.
"""

from __future__ import annotations

import importlib
import struct
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from dlms_cosem.connection import XDlmsApduFactory
from dlms_cosem.dlms_data import DlmsDataParser
from dlms_cosem.exceptions import DecryptionError
from dlms_cosem.protocol.wrappers import WrapperProtocolDataUnit
from dlms_cosem.protocol.xdlms import DataNotification, GeneralGlobalCipher, GetResponseNormal
from gurux_dlms import GXReplyData
from gurux_dlms.enums import Command, InterfaceType, Security, Standard
from gurux_dlms.secure import GXDLMSSecureClient

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # KEYC, used as EK and AK
SYSTEM_TITLE = bytes.fromhex("2f19229199164103")  # UNI/TS title: "FIO", serial 034116999122
PUSH_IC = 0x000004D2
GET_IC = 0x000004D3
REGISTER_VALUE = 123456
SC = 0x30  # suite 0, authenticated + encrypted
TAG_LEN = 12

# CF47 "content A" (docs/uni-ts-11291.md §2.4): name -> (struct code, value). Ends with the
# spare octet-string.
_CF47: tuple[tuple[str, str, int | bool], ...] = (
    ("template_id", "B", 47),
    ("unix_time", "I", 1795237200),  # 2026-11-21T05:00:00Z = 06:00 CET, gas-day start
    ("pp4_network_status", "H", 0x0000),
    ("valve_output_state", "?", True),  # open
    ("valve_control_state", "B", 1),  # connected
    ("metrological_event_counter", "H", 3),
    ("event_counter", "H", 41),
    ("daily_diagnostic", "H", 0x0000),
    ("index", "I", 1234567),  # 7.0.13.2.0.255, scaler -3 -> 1234.567 Sm3
    ("index_under_alarm", "I", 0),
    ("billing_counter", "B", 11),
    ("mgmt_frame_counter", "I", 4242),  # 0.0.43.1.1.255
)
CF47_STRUCT = struct.Struct(">" + "".join(code for _, code, _ in _CF47))  # 28 bytes, no spare
CF47_FIELDS: dict[str, Any] = {name: value for name, _, value in _CF47} | {"spare": b""}


def pack_cf47(fields: Mapping[str, Any] = CF47_FIELDS) -> bytes:
    """Compact buffer of a CF47 (template id first, spare octet-string with its length)."""
    spare = bytes(fields["spare"])
    fixed = CF47_STRUCT.pack(*(fields[name] for name, _, _ in _CF47))
    return fixed + bytes([len(spare)]) + spare


def unpack_cf47(buf: bytes) -> dict[str, Any]:
    """CF47 compact buffer -> fields (shared by the library peers, which do not know CF47)."""
    values = CF47_STRUCT.unpack_from(buf)
    out = dict(zip(CF47_FIELDS, values, strict=False))
    n = CF47_STRUCT.size
    out["spare"] = bytes(buf[n + 1 : n + 1 + buf[n]])
    return out


def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _ggc_frame(
    key: bytes, system_title: bytes, ic: int, plain: bytes, omit_system_title: bool
) -> bytes:
    """Wrapper(1 -> 1) + general-glo-ciphering of `plain` (IV = title || IC, AAD = SC || AK)."""
    iv = system_title + ic.to_bytes(4, "big")
    sealed = AESGCM(key).encrypt(iv, plain, bytes([SC]) + key)
    ct_tag = sealed[:-16] + sealed[-16:][:TAG_LEN]  # DLMS truncates the GCM tag to 12 bytes
    content = bytes([SC]) + ic.to_bytes(4, "big") + ct_tag
    title = b"\x00" if omit_system_title else bytes([len(system_title)]) + system_title
    apdu = b"\xdb" + title + _ber_len(len(content)) + content
    return struct.pack(">HHHH", 1, 1, 1, len(apdu)) + apdu


def cf47_plaintext(invocation_counter: int, fields: Mapping[str, Any] = CF47_FIELDS) -> bytes:
    """DATA-NOTIFICATION: 0F, long-invoke-id u32, 00 (no date-time), body 09 <len> <CF47>."""
    buf = pack_cf47(fields)
    long_invoke_id = invocation_counter & 0x00FFFFFF  # unconfirmed, normal priority
    return b"\x0f" + long_invoke_id.to_bytes(4, "big") + b"\x00\x09" + _ber_len(len(buf)) + buf


def register_plaintext(value: int = REGISTER_VALUE) -> bytes:
    """GET-Response-Normal, invoke-id C1, success, double-long-unsigned."""
    return bytes.fromhex("c401c10006") + value.to_bytes(4, "big")


def make_cf47_push(
    key: bytes,
    system_title: bytes,
    invocation_counter: int,
    *,
    fields: Mapping[str, Any] = CF47_FIELDS,
    omit_system_title: bool = False,
) -> bytes:
    plain = cf47_plaintext(invocation_counter, fields)
    return _ggc_frame(key, system_title, invocation_counter, plain, omit_system_title)


def make_get_response_register(
    key: bytes,
    system_title: bytes,
    invocation_counter: int,
    *,
    value: int = REGISTER_VALUE,
    omit_system_title: bool = False,
) -> bytes:
    plain = register_plaintext(value)
    return _ggc_frame(key, system_title, invocation_counter, plain, omit_system_title)


# --- raw AES-GCM: the lower bound ------------------------------------------------------------
# AESGCM.decrypt only accepts a 16-byte tag (DLMS sends 12): verify with Cipher/GCM instead.
_AES = algorithms.AES128(KEY)
_AAD = bytes([SC]) + KEY


def raw_decrypt(frame: bytes) -> bytes:
    """Plain APDU of a wrapper + general-glo-ciphering frame, tag verified (InvalidTag)."""
    title_len = frame[9]  # 0 (Italian "DB 00") or 8
    pos = 10 + title_len  # 8 wrapper bytes, DB, title length, title
    pos += 1 + (frame[pos] & 0x7F if frame[pos] & 0x80 else 0)  # BER length of the content
    iv = (frame[10:18] if title_len else SYSTEM_TITLE) + frame[pos + 1 : pos + 5]
    dec = Cipher(_AES, modes.GCM(iv, frame[-TAG_LEN:], min_tag_length=TAG_LEN)).decryptor()
    dec.authenticate_additional_data(_AAD)
    return dec.update(frame[pos + 5 : -TAG_LEN]) + dec.finalize()


# --- dlms-cosem 25.1.0 ------------------------------------------------------------------------
def _dc_plain(frame: bytes) -> bytes:
    wpdu = WrapperProtocolDataUnit.from_bytes(frame)  # checks the header length
    apdu = XDlmsApduFactory.apdu_from_bytes(wpdu.data)
    assert isinstance(apdu, GeneralGlobalCipher)
    if not apdu.system_title:  # "DB 00": decrypt() insists on an 8-byte title
        apdu.system_title = SYSTEM_TITLE
    return apdu.to_plain_apdu(KEY, KEY)  # dlms_cosem.security.decrypt, tag verified


def dlms_cosem_buffer(frame: bytes) -> bytes:
    """Compact buffer of a ciphered DATA-NOTIFICATION (body variant A, `09 <len> <buf>`)."""
    dn = XDlmsApduFactory.apdu_from_bytes(_dc_plain(frame))
    assert isinstance(dn, DataNotification)
    return DlmsDataParser().parse(dn.body, limit=1)[0].value


def dlms_cosem_push(frame: bytes) -> dict[str, Any]:
    return unpack_cf47(dlms_cosem_buffer(frame))


def dlms_cosem_get(frame: bytes) -> int:
    resp = XDlmsApduFactory.apdu_from_bytes(_dc_plain(frame))
    assert isinstance(resp, GetResponseNormal)
    return DlmsDataParser().parse(resp.data, limit=1)[0].value


# --- gurux-dlms 1.0.203 -----------------------------------------------------------------------
@cache
def _gurux_client() -> Any:
    # decryptAesGcm print()s twice per frame: shadow `print` in that module only (cheaper and
    # fairer to time than redirect_stdout). The package attribute is the class, hence sys.modules.
    importlib.import_module("gurux_dlms.GXDLMSChippering").print = lambda *_a, **_k: None
    client = GXDLMSSecureClient(True, 1, 1, interfaceType=InterfaceType.WRAPPER)
    client.standard = Standard.ITALY
    client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    client.ciphering.blockCipherKey = KEY
    client.ciphering.authenticationKey = KEY
    client.settings.sourceSystemTitle = SYSTEM_TITLE  # needed for "DB 00" frames
    return client


def gurux_buffer(frame: bytes) -> bytes:
    """Compact buffer via GXDLMSSecureClient.getData (the notification lands in `notify`)."""
    reply, notify = GXReplyData(), GXReplyData()
    _gurux_client().getData(frame, reply, notify)
    assert notify.command == Command.DATA_NOTIFICATION and notify.isComplete()
    return bytes(notify.value)


def gurux_push(frame: bytes) -> dict[str, Any]:
    return unpack_cf47(gurux_buffer(frame))


def gurux_get(frame: bytes) -> int:
    reply = GXReplyData()
    assert _gurux_client().getData(frame, reply, GXReplyData())
    assert reply.command == Command.GET_RESPONSE and reply.error == 0
    return int(reply.value)  # GXUInt32


# --- self-check and timing --------------------------------------------------------------------
PUSH_FRAME = make_cf47_push(KEY, SYSTEM_TITLE, PUSH_IC)
GET_FRAME = make_get_response_register(KEY, SYSTEM_TITLE, GET_IC)
PEERS: dict[str, dict[str, Callable[[bytes], object]]] = {
    "raw-aes-gcm": {"push": raw_decrypt, "get": raw_decrypt},
    "dlms-cosem": {"push": dlms_cosem_push, "get": dlms_cosem_get},
    "gurux-dlms": {"push": gurux_push, "get": gurux_get},
}
FRAMES = {"push": PUSH_FRAME, "get": GET_FRAME}


def self_check() -> None:
    """Every peer decodes both frames (titled and "DB 00") to the expected values."""
    plain = {"push": cf47_plaintext(PUSH_IC), "get": register_plaintext()}
    expected: dict[str, object] = {"push": CF47_FIELDS, "get": REGISTER_VALUE}
    for omit in (False, True):
        frames = {
            "push": make_cf47_push(KEY, SYSTEM_TITLE, PUSH_IC, omit_system_title=omit),
            "get": make_get_response_register(KEY, SYSTEM_TITLE, GET_IC, omit_system_title=omit),
        }
        for kind, frame in frames.items():
            assert raw_decrypt(frame) == plain[kind], (kind, omit)
            for name, fns in PEERS.items():
                if name != "raw-aes-gcm":
                    assert fns[kind](frame) == expected[kind], (name, kind, omit)
    assert unpack_cf47(pack_cf47())["unix_time"] == 1795237200
    assert gurux_push(PUSH_FRAME)["index"] == 1234567
    tampered = PUSH_FRAME[:-1] + bytes([PUSH_FRAME[-1] ^ 1])
    for reject in (raw_decrypt, dlms_cosem_push):
        try:
            reject(tampered)
        except (InvalidTag, DecryptionError):
            continue
        raise AssertionError(f"{reject.__name__} accepted a tampered tag")
    assert gurux_push(tampered) == CF47_FIELDS  # known: gurux does not verify the GCM tag


def rate(fn: Callable[[bytes], object], frame: bytes, seconds: float = 1.0) -> float:
    """Messages per second of `fn(frame)`, in batches that grow to about 1/20 of `seconds`."""
    fn(frame)  # warm-up (lazy clients, caches)
    done, batch = 0, 1
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn(frame)
        done += batch
        now = time.perf_counter()
        if now - start >= seconds:
            return done / (now - start)
        if now - t0 < seconds / 20:
            batch *= 2


if __name__ == "__main__":
    self_check()
    print(f"self-check OK; push frame {len(PUSH_FRAME)} B, get frame {len(GET_FRAME)} B")
    for name, fns in PEERS.items():
        for kind, fn in fns.items():
            print(f"{name:12} {kind:5} {rate(fn, FRAMES[kind]):>12,.0f} msg/s")
