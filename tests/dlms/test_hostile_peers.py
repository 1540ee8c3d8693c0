"""What a hostile or broken peer cannot do to the codec and the machines.

Each test pins a defect found in review (a hang, a quadratic cost, a context poisoned by a
forged frame, a lost event...) so that it stays fixed.
"""

from __future__ import annotations

import pytest

from sac.dlms import Obis
from sac.dlms.acse import AARE, AARQ, InitiateRequest, InitiateResponse, decode_acse
from sac.dlms.apdu import decode_apdu
from sac.dlms.association import ClientAssociation, State
from sac.dlms.axdr import (
    Array,
    CompactArray,
    Integer,
    LongUnsigned,
    OctetString,
    TypeDescription,
    decode_data,
    decode_type_description,
    decode_untagged,
    encode_data,
)
from sac.dlms.compact import layout_from_description
from sac.dlms.cosem import DataAccessResult, ServiceError
from sac.dlms.events import ActionCompleted, RequestFailed
from sac.dlms.security import CipheredApdu, SecurityContext, Suite0Cipher
from sac.dlms.server import ServerAssociation
from sac.dlms.wrapper import encode_wrapper
from sac.dlms.xdlms import (
    ActionResponseNormal,
    AttributeDescriptor,
    ExceptionResponse,
    GetRequestNext,
    GetResponseNormal,
    GetResponseWithDatablock,
    SetRequestWithDatablock,
    SetRequestWithFirstDatablock,
    SetResponseLastDatablock,
)
from sac.errors import DecodeError, EncodeError, LocalProtocolError, SacError, SecurityError
from tests.dlms.meter_model import KEY, METER_TITLE, PROFILE, MeterModel

# --- compact data that would never end --------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13000100",  # compact-array of null, one byte of contents
        "1302000100",  # of empty structures
        "1301ffff01ffff000100",  # 2^32 nulls from a few bytes
        "c401c10013000100",  # inside a GET response
        "0f000000010013000100",  # inside a push
    ],
)
def test_compact_data_of_empty_elements_is_refused_at_once(raw: str) -> None:
    # before the fix these looped for ever, appending None until the memory ran out
    data = bytes.fromhex(raw)
    with pytest.raises(DecodeError):
        decode_apdu(data) if data[0] in (0xC4, 0x0F) else decode_data(data)


def test_untagged_values_have_a_value_budget() -> None:
    nested = decode_type_description(bytes.fromhex("01ffff01ffff00"))
    with pytest.raises(DecodeError, match="more than"):
        decode_untagged(nested, b"")
    with pytest.raises(EncodeError):
        encode_data(CompactArray(TypeDescription(0), (None, None)))


# --- block transfers --------------------------------------------------------------------


def test_an_empty_intermediate_get_block_fails_the_request() -> None:
    client = ClientAssociation(1, pre_established=True)
    iid = client.get(7, PROFILE)
    client.data_to_send()
    empty = GetResponseWithDatablock(0xC0 | iid, False, 1, b"").to_bytes()
    [failed] = client.receive_data(encode_wrapper(1, 1, empty))
    assert isinstance(failed, RequestFailed) and "empty block" in str(failed.error)
    assert client.data_to_send() == b""  # no GET-Request-Next for it


def test_set_blocks_cost_linear_time_and_empty_ones_abort() -> None:
    server = ServerAssociation(MeterModel(), 1, pre_established=True)
    attr = AttributeDescriptor(7, PROFILE, 2)
    first = SetRequestWithFirstDatablock(0xC1, attr, False, 1, b"\x01").to_bytes()
    server.receive_data(encode_wrapper(1, 1, first))
    server.data_to_send()
    empty = SetRequestWithDatablock(0xC1, False, 2, b"").to_bytes()
    server.receive_data(encode_wrapper(1, 1, empty))
    [answer] = [decode_apdu(server.data_to_send()[8:])]
    assert answer == SetResponseLastDatablock(0xC1, DataAccessResult.LONG_SET_ABORTED, 2)


def test_a_set_acknowledged_before_its_last_block_fails() -> None:
    client = ClientAssociation(1, pre_established=True, server_max_receive_pdu=64)
    iid = client.set(7, PROFILE, 2, Array(LongUnsigned(i) for i in range(60)))
    client.data_to_send()
    early = SetResponseLastDatablock(0xC0 | iid, DataAccessResult.SUCCESS, 1).to_bytes()
    [failed] = client.receive_data(encode_wrapper(1, 1, early))
    assert isinstance(failed, RequestFailed) and "block 1 of" in str(failed.error)


def test_get_next_with_another_invoke_id_ends_the_long_get() -> None:
    model = MeterModel()
    server = ServerAssociation(model, 1, pre_established=True, client_max_receive_pdu=100)
    client = ClientAssociation(1, pre_established=True, max_receive_pdu=100)
    client.get(7, PROFILE)
    server.receive_data(client.data_to_send())
    server.data_to_send()  # block 1
    server.receive_data(encode_wrapper(1, 1, GetRequestNext(0xC5, 1).to_bytes()))
    answer = decode_apdu(server.data_to_send()[8:])
    assert answer.error == DataAccessResult.DATA_BLOCK_NUMBER_INVALID


# --- security ---------------------------------------------------------------------------


def _meter(title: bytes = METER_TITLE, key: bytes = KEY) -> SecurityContext:
    return SecurityContext(Suite0Cipher(key), title, invocation_counter=5)


def test_a_forged_frame_teaches_no_system_title() -> None:
    sac = SecurityContext(Suite0Cipher(KEY), b"SACSACSA")
    forged = _meter(b"EVILEVIL", bytes(16)).protect(b"\xc4\x01\xc1\x00\x00")
    with pytest.raises(SacError):
        sac.unprotect(forged)
    assert sac.peer_system_title is None and sac.peer_invocation_counter is None
    assert sac.unprotect(_meter().protect(b"\xc4\x01\xc1\x00\x00")) == b"\xc4\x01\xc1\x00\x00"
    assert sac.peer_system_title == METER_TITLE


def test_a_reflected_frame_is_refused() -> None:
    sac = SecurityContext(Suite0Cipher(KEY), b"SACSACSA", invocation_counter=9)
    mirror = SecurityContext(Suite0Cipher(KEY), b"SACSACSA")
    with pytest.raises(SecurityError, match="own system title"):
        mirror.unprotect(sac.protect(b"\xc0\x01\xc1"))


def test_envelopes_must_match_what_they_carry() -> None:
    sac = SecurityContext(Suite0Cipher(KEY), b"SACSACSA", peer_system_title=METER_TITLE)
    sealed = Suite0Cipher(KEY).seal(0x30, METER_TITLE, 7, b"\xc4\x01\xc1\x00\x00")
    for tag, reason in ((0xC8, "glo- envelope"), (0xD4, "dedicated"), (0xDC, "dedicated")):
        title = b"" if tag == 0xDC else None
        with pytest.raises(SecurityError, match=reason):
            sac.unprotect(CipheredApdu(tag, title, 0x30, 7, sealed).to_bytes())
    assert sac.unprotect(CipheredApdu(0xCC, None, 0x30, 7, sealed).to_bytes())[0] == 0xC4


def test_an_exhausted_counter_gets_an_answer_not_an_escape() -> None:
    meter = SecurityContext(
        Suite0Cipher(KEY),
        METER_TITLE,
        peer_system_title=b"SACSACSA",
        peer_invocation_counter=0xFFFFFFFF,
    )
    server = ServerAssociation(MeterModel(), 1, pre_established=True, security=meter)
    head_end = SecurityContext(Suite0Cipher(KEY), b"SACSACSA", invocation_counter=3)
    server.receive_data(
        encode_wrapper(
            1, 1, head_end.protect(b"\xc0\x01\xc1\x00\x01\x00\x00\x2a\x00\x00\xff\x02\x00")
        )
    )
    assert server.data_to_send()[8:] == b"\xd8\x01\x01"  # operation-not-possible


# --- the machines keep their books straight ---------------------------------------------


def test_a_request_that_cannot_be_encoded_is_not_left_pending() -> None:
    client = ClientAssociation(1, pre_established=True)
    for bad in (
        lambda: client.set(1, "0.0.96.1.10.255", 2, 5),
        lambda: client.get(1, "0.0.1.0.0.255", 200),
    ):
        with pytest.raises(EncodeError):
            bad()
    assert client.pending == () and client.data_to_send() == b""
    client.release()
    assert client.state is State.RELEASED


def test_events_before_a_bad_pdu_are_not_lost() -> None:
    client = ClientAssociation(1, pre_established=True)
    iid = client.action(70, "0.0.96.3.10.255", 1, Integer(0))
    client.data_to_send()
    done = encode_wrapper(1, 1, ActionResponseNormal(0xC0 | iid, 0).to_bytes())
    with pytest.raises(DecodeError) as info:
        client.receive_data(done + encode_wrapper(1, 1, b"\xc4"))
    [event] = info.value.events
    assert isinstance(event, ActionCompleted) and event.invoke_id == iid


def test_unknown_result_codes_stay_errors() -> None:
    client = ClientAssociation(1, pre_established=True)
    iid = client.get(1, "0.0.96.1.10.255")
    client.data_to_send()
    [done] = client.receive_data(encode_wrapper(1, 1, bytes((0xC4, 1, 0xC0 | iid, 1, 10))))
    assert isinstance(done.result, DataAccessResult) and done.result == 10
    assert done.result.name == "CODE_10"
    assert GetResponseNormal(0xC1, done.result).to_bytes()[-2:] == b"\x01\x0a"


def test_client_refuses_an_aare_it_cannot_honour() -> None:
    info = InitiateResponse(0x1D, 500)
    for aare in (AARE(0, 14, info), AARE(0, 0, info, application_context=3)):
        client = ClientAssociation(16)
        client.associate()
        with pytest.raises(SacError):
            client.receive_data(encode_wrapper(1, 16, aare.to_bytes()))


def test_server_refuses_a_pdu_size_too_small_for_a_block() -> None:
    server = ServerAssociation(MeterModel(), 16)
    server.receive_data(encode_wrapper(16, 1, AARQ(InitiateRequest(0x1D, 20)).to_bytes()))
    aare = decode_acse(server.data_to_send()[8:])
    assert not aare.accepted and aare.user_information.value == 3  # pdu-size-too-short
    assert not server.associated


def test_invocation_counter_exception_carries_the_counter() -> None:
    client = ClientAssociation(1, pre_established=True)
    client.get(1, "0.0.96.1.10.255")
    [failed] = client.receive_data(encode_wrapper(1, 1, bytes.fromhex("d80106000003e8")))
    assert failed.error.wire_code == ServiceError.INVOCATION_COUNTER_ERROR
    assert failed.error.invocation_counter == 1000


def test_layout_from_capture_objects_the_meter_repeats() -> None:
    desc = decode_type_description(bytes.fromhex("02020606"))
    index = Obis("7.0.13.2.0.255")
    layout = layout_from_description(60, desc, ((3, index, 2, 0), (3, index, 2, 0)))
    assert [f.name for f in layout.fields] == ["3/7.0.13.2.0.255/2", "3/7.0.13.2.0.255/2#1"]
    layout = layout_from_description(60, desc, ((3, index, 2, 1), (3, index, 2, 2)))
    assert [f.name for f in layout.fields] == ["3/7.0.13.2.0.255/2/1", "3/7.0.13.2.0.255/2/2"]


def test_encoders_raise_only_encode_errors() -> None:
    for apdu in (
        AARE(0, 300, None),
        ExceptionResponse(1, 999),
        CipheredApdu(0xDB, b"", 0x30, 1 << 33, b""),
        GetResponseWithDatablock(0xC1, True, 1 << 33, b""),
    ):
        with pytest.raises(EncodeError):
            apdu.to_bytes()
    with pytest.raises(LocalProtocolError):
        ClientAssociation(1, pre_established=True, server_max_receive_pdu=20).set(
            1, "0.0.96.1.10.255", 2, OctetString(bytes(100))
        )
