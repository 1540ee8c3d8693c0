"""Round trips: whatever sac encodes, sac decodes to the same typed value, and back to the same
bytes.  300 examples each by default; `make fuzz` runs 100k (HYPOTHESIS_PROFILE=fuzz)."""

from __future__ import annotations

import datetime as dt

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from sac.dlms import Obis
from sac.dlms.acse import AARE, AARQ, RLRE, RLRQ, InitiateRequest, InitiateResponse, decode_acse
from sac.dlms.apdu import decode_apdu
from sac.dlms.axdr import (
    decode_ber_length,
    decode_data,
    decode_type_description,
    encode_ber_length,
    encode_data,
    encode_type_description,
    type_description_of,
)
from sac.dlms.cosem import DataAccessResult
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.security import CipheredApdu, SecurityContext, Suite0Cipher
from sac.dlms.wrapper import WrapperFramer, WrapperPdu, encode_wrapper
from sac.dlms.xdlms import (
    NO_VALUE,
    ActionRequestNormal,
    ActionResponseNormal,
    AttributeDescriptor,
    DataNotification,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDatablock,
    GetResponseWithList,
    MethodDescriptor,
    SelectiveAccess,
    SetRequestNormal,
    SetRequestWithDatablock,
    SetRequestWithFirstDatablock,
    SetResponseDatablock,
    SetResponseLastDatablock,
    SetResponseNormal,
)
from sac.errors import DecryptionError
from tests.dlms.strategies import data_values, date_times, obis, shape

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i8 = st.integers(-128, 127)
results = st.sampled_from(list(DataAccessResult))


@given(obis)
def test_obis_text_and_bytes(o: Obis) -> None:
    assert Obis(str(o)) == o == Obis(bytes(o))
    assert Obis(o.display()) == o
    assert hash(Obis(str(o))) == hash(o)


@given(st.integers(0, 0xFFFFFFFF))
def test_ber_length(n: int) -> None:
    raw = encode_ber_length(n)
    assert decode_ber_length(raw + b"tail", 0) == (n, len(raw))
    assert len(raw) == 1 if n < 0x80 else len(raw) <= 5


@given(data_values)
def test_data_round_trip(value: object) -> None:
    raw = encode_data(value)
    back = decode_data(raw)
    assert shape(back) == shape(value)
    assert encode_data(back) == raw


@given(data_values)
def test_type_description_round_trip(value: object) -> None:
    try:
        desc = type_description_of(value)
    except Exception:  # empty arrays have no element type
        return
    assert decode_type_description(encode_type_description(desc)) == desc


@given(date_times)
def test_date_time_bytes(value: CosemDateTime) -> None:
    assert CosemDateTime.from_bytes(value.to_bytes()) == value


@given(
    st.datetimes(
        min_value=dt.datetime(1990, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=1))]),
    ),
    st.booleans(),
)
def test_date_time_from_python(moment: dt.datetime, italian: bool) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 10_000 * 10_000)
    cosem = CosemDateTime.from_datetime(moment, inverted_deviation=italian)
    assert cosem.to_datetime(inverted_deviation=italian) == moment
    assert cosem.to_datetime(inverted_deviation=italian).utcoffset() == moment.utcoffset()


attributes = st.builds(AttributeDescriptor, u16, obis, i8)
methods = st.builds(MethodDescriptor, u16, obis, i8)
accesses = st.none() | st.builds(SelectiveAccess, u8, data_values)
xdlms_apdus = st.one_of(
    st.builds(GetRequestNormal, u8, attributes, accesses),
    st.builds(GetRequestNext, u8, u32),
    st.builds(
        GetRequestWithList, u8, st.lists(st.tuples(attributes, accesses), max_size=4).map(tuple)
    ),
    st.builds(GetResponseNormal, u8, data_values | results),
    st.builds(GetResponseWithDatablock, u8, st.booleans(), u32, st.binary(max_size=300)),
    st.builds(GetResponseWithDatablock, u8, st.booleans(), u32, st.just(b""), results),
    st.builds(GetResponseWithList, u8, st.lists(data_values | results, max_size=4).map(tuple)),
    st.builds(SetRequestNormal, u8, attributes, data_values, accesses),
    st.builds(
        SetRequestWithFirstDatablock,
        u8,
        attributes,
        st.booleans(),
        u32,
        st.binary(max_size=50),
        accesses,
    ),
    st.builds(SetRequestWithDatablock, u8, st.booleans(), u32, st.binary(max_size=50)),
    st.builds(SetResponseNormal, u8, results),
    st.builds(SetResponseDatablock, u8, u32),
    st.builds(SetResponseLastDatablock, u8, results, u32),
    st.builds(ActionRequestNormal, u8, methods, st.just(NO_VALUE) | data_values),
    st.builds(ActionResponseNormal, u8, results, st.just(NO_VALUE) | data_values | results),
    st.builds(DataNotification, u32, st.none() | date_times, data_values),
    st.builds(ExceptionResponse, st.integers(1, 2), st.integers(1, 5)),
    st.builds(ExceptionResponse, st.integers(1, 2), st.just(6), u32),
)


@given(xdlms_apdus)
def test_xdlms_round_trip(apdu: object) -> None:
    raw = apdu.to_bytes()
    back = decode_apdu(raw)
    assert type(back) is type(apdu)
    assert back.to_bytes() == raw


initiate_requests = st.builds(
    InitiateRequest,
    st.integers(0, 0xFFFFFF),
    u16,
    st.integers(1, 255),
    st.none() | st.binary(min_size=16, max_size=16),
    st.booleans(),
    st.none() | u8,
)
initiate_responses = st.builds(
    InitiateResponse, st.integers(0, 0xFFFFFF), u16, st.integers(1, 255), st.none() | u8, u16
)
titles = st.none() | st.binary(min_size=8, max_size=8)
acse_apdus = st.one_of(
    st.builds(
        AARQ,
        st.none() | initiate_requests,
        st.sampled_from([1, 3]),
        titles,
        st.none() | st.integers(0, 7),
        st.none() | st.binary(max_size=20),
    ),
    st.builds(
        AARE,
        st.integers(0, 2),
        st.integers(0, 14),
        st.none() | initiate_responses,
        st.sampled_from([1, 3]),
        st.sampled_from([1, 2]),
        titles,
    ),
    st.builds(RLRQ, st.none() | st.integers(0, 30), st.none() | initiate_requests),
    st.builds(RLRE, st.none() | st.integers(0, 30), st.none() | initiate_responses),
)


@given(acse_apdus)
def test_acse_round_trip(apdu: object) -> None:
    if isinstance(apdu, AARQ) and apdu.mechanism is None:
        apdu = AARQ(apdu.user_information, apdu.application_context, apdu.calling_ap_title)
    raw = apdu.to_bytes()
    assert decode_acse(raw).to_bytes() == raw


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
    st.integers(0, 0xFFFFFFFE),
    st.binary(max_size=600),
    st.sampled_from([0x10, 0x20, 0x30]),
    st.booleans(),
)
def test_security_round_trip(
    ek: bytes, ak: bytes, title: bytes, ic: int, plain: bytes, sc: int, omit: bool
) -> None:
    sender = SecurityContext(
        Suite0Cipher(ek, ak),
        title,
        invocation_counter=ic,
        security_control=sc,
        omit_system_title=omit,
    )
    receiver = SecurityContext(
        Suite0Cipher(ek, ak), b"RECEIVER", peer_system_title=title, security_control=sc
    )
    wire = sender.protect(plain)
    env = CipheredApdu.from_bytes(wire)
    assert env.system_title == (b"" if omit else title) and env.invocation_counter == ic
    if sc == 0x20:  # encryption only carries no tag: the receiver refuses that policy
        assert Suite0Cipher(ek, ak).open(sc, title, ic, env.payload) == plain
        return
    assert receiver.unprotect(wire) == plain
    assert receiver.peer_invocation_counter == ic


@given(
    st.lists(st.tuples(u16, u16, st.binary(max_size=200)), max_size=6),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_wrapper_framer_any_chunking(pdus: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_wrapper(s, d, a) for s, d, a in pdus)
    framer = WrapperFramer()
    got: list[WrapperPdu] = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += framer.feed(stream[pos : pos + n])
        pos += n
        i += 1
    assert [(p.source, p.destination, p.apdu) for p in got] == pdus
    assert framer.buffered == 0


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=300),
    st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_fast_tag_check_is_gcm_verification(
    key: bytes, title: bytes, ic: int, plain: bytes, flip: int | None
) -> None:
    """Suite0Cipher.open accepts exactly what cryptography's GCM decryptor (12-byte tag)
    accepts, and gives the same plaintext: its key-stream trick is the GCM check."""
    cipher = Suite0Cipher(key)
    payload = bytearray(cipher.seal(0x30, title, ic, plain))
    if flip is not None:
        bit = flip % (len(payload) * 8)
        payload[bit // 8] ^= 1 << (bit % 8)
    iv = title + ic.to_bytes(4, "big")
    body, tag = bytes(payload[:-12]), bytes(payload[-12:])
    reference = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=12)).decryptor()
    reference.authenticate_additional_data(b"\x30" + key)
    try:
        expected: bytes | None = reference.update(body) + reference.finalize()
    except InvalidTag:
        expected = None
    try:
        got: bytes | None = cipher.open(0x30, title, ic, bytes(payload))
    except DecryptionError:
        got = None
    assert got == expected
    assert (got is None) == (flip is not None)
