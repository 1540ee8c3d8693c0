"""Hostile input: random and mutated bytes into every decoder raise only sac's own errors.

300 examples per target by default; `make fuzz` runs 100k per target (HYPOTHESIS_PROFILE=fuzz).
No IndexError, struct.error, ValueError, InvalidTag, RecursionError... may escape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sac.dlms import Obis
from sac.dlms.acse import decode_initiate
from sac.dlms.apdu import decode_apdu
from sac.dlms.association import ClientAssociation
from sac.dlms.axdr import decode_data, decode_type_description
from sac.dlms.compact import decode_compact
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.server import ServerAssociation
from sac.dlms.wrapper import WrapperFramer, decode_wrapper
from sac.errors import SacError
from sac.profiles.layouts import STANDARD_LAYOUTS
from tests.conftest import all_vectors
from tests.dlms.meter_model import METER_TITLE, MeterModel

KEY = bytes.fromhex("4d5944554d4d59474c4f42414c4b4559")


def _apdu_of(v: dict[str, Any]) -> bytes:
    raw = bytes.fromhex(v["hex"])
    return raw[8:] if v["layer"] == "wrapper+apdu" else raw


SEED_APDUS = [_apdu_of(v) for v in all_vectors().values() if v["layer"] in ("apdu", "wrapper+apdu")]
SEED_STREAMS = [
    bytes.fromhex(v["hex"]) for v in all_vectors().values() if v["layer"].startswith("wrapper")
]
SEED_BUFFERS = [bytes.fromhex(all_vectors()["TV2-CF30"]["hex"])] + [
    bytes.fromhex(v["expected"]["data_notification"]["compact_buffer_hex"])
    for k, v in all_vectors().items()
    if k.startswith("TV1-")
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=400) | mutated(seeds)


def only_our_errors(fn: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(SacError):
        fn(data)


def _management_client(data: bytes) -> None:
    client = ClientAssociation(
        1,
        pre_established=True,
        security=SecurityContext(Suite0Cipher(KEY), b"SACSACSA", peer_system_title=METER_TITLE),
    )
    client.get(7, "7.0.99.99.3.255")
    client.receive_data(data)


def _public_server(data: bytes) -> None:
    ServerAssociation(MeterModel(), 16).receive_data(data)


def _management_server(data: bytes) -> None:
    security = SecurityContext(Suite0Cipher(KEY), METER_TITLE, peer_system_title=b"SACSACSA")
    ServerAssociation(MeterModel(), 1, pre_established=True, security=security).receive_data(data)


def _unprotect(data: bytes) -> None:
    SecurityContext(Suite0Cipher(KEY), b"SACSACSA", peer_system_title=METER_TITLE).unprotect(data)


def _framer_in_pieces(data: bytes) -> None:
    framer = WrapperFramer(max_apdu_length=1024, sources={1}, destinations={1})
    for i in range(0, len(data), 7):
        framer.feed(data[i : i + 7])


def _date_time(data: bytes) -> None:
    CosemDateTime.from_bytes(data[:12]).to_datetime(inverted_deviation=True)


TARGETS: list[tuple[str, Callable[[bytes], Any], list[bytes]]] = [
    ("decode_apdu", decode_apdu, SEED_APDUS),
    ("decode_data", decode_data, [a[4:] for a in SEED_APDUS if a[:1] == b"\xc4"] + SEED_APDUS),
    ("decode_type_description", decode_type_description, [b"\x02\x03\x06\x12\x01\x00\x02\x11"]),
    ("decode_initiate", decode_initiate, [bytes.fromhex("01000000065f1f0400401e5dffff")]),
    ("decode_compact", lambda b: decode_compact(b, STANDARD_LAYOUTS), SEED_BUFFERS),
    ("unprotect", _unprotect, SEED_APDUS),
    ("wrapper_stream", _framer_in_pieces, SEED_STREAMS),
    ("wrapper_datagram", decode_wrapper, SEED_STREAMS),
    ("client_machine", _management_client, SEED_STREAMS),
    ("public_server_machine", _public_server, SEED_STREAMS),
    ("management_server_machine", _management_server, SEED_STREAMS),
    ("date_time", _date_time, [a[6:18] for a in SEED_APDUS if len(a) > 18]),
]


@pytest.mark.parametrize(("name", "target", "seeds"), TARGETS, ids=[t[0] for t in TARGETS])
def test_hostile_bytes_raise_only_sac_errors(
    name: str, target: Callable[[bytes], Any], seeds: list[bytes]
) -> None:
    @given(hostile(seeds))
    def run(data: bytes) -> None:
        only_our_errors(target, data)

    run()


@given(st.text(max_size=30))
def test_hostile_obis_text(text: str) -> None:
    with contextlib.suppress(SacError):
        Obis(text)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    deep = b"\x01\x01" * 100_000 + b"\x00"
    with pytest.raises(SacError, match="nested too deeply"):
        decode_data(deep)
    with pytest.raises(SacError):
        decode_apdu(b"\xc4\x01\xc1\x00" + deep)


def test_huge_counts_are_refused_before_allocating() -> None:
    with pytest.raises(SacError, match="cannot fit"):
        decode_data(b"\x01\x84\xff\xff\xff\xff\x00")
    with pytest.raises(SacError, match="over the limit"):
        WrapperFramer(max_apdu_length=2048).feed(b"\x00\x01\x00\x01\x00\x01\xff\xff")
