"""The client and server association machines: against the vectors, and against each other."""

from __future__ import annotations

from typing import Any

import pytest

from sac.dlms import Obis
from sac.dlms.acse import (
    AARE,
    AARQ,
    AssociationResult,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
)
from sac.dlms.association import ClientAssociation, State
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Integer,
    LongUnsigned,
    OctetString,
    Structure,
    VisibleString,
)
from sac.dlms.cosem import DataAccessResult, ServiceError
from sac.dlms.events import (
    ActionCompleted,
    AssociationAccepted,
    AssociationRejected,
    GetCompleted,
    GetListCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
)
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.server import ServerAssociation
from sac.dlms.wrapper import encode_wrapper
from sac.dlms.xdlms import (
    NO_VALUE,
    AttributeDescriptor,
    ExceptionResponse,
    GetResponseNormal,
    GetResponseWithDatablock,
    range_descriptor,
)
from sac.errors import LocalProtocolError, RemoteProtocolError
from tests.conftest import vbytes, vector
from tests.dlms.meter_model import FC, KEY, LDN, METER_TITLE, PDR, PROFILE, VALVE, MeterModel


def pump(client: ClientAssociation, server: ServerAssociation) -> list[Any]:
    """Carry bytes both ways until both are quiet; the client's events."""
    events: list[Any] = []
    while data := client.data_to_send():
        server.receive_data(data)
        events += client.receive_data(server.data_to_send())
    return events


def management_pair(
    model: MeterModel, *, pdu: int = 0xFFFF, client_ic: int = 42
) -> tuple[ClientAssociation, ServerAssociation]:
    client = ClientAssociation(
        1,
        pre_established=True,
        security=SecurityContext(
            Suite0Cipher(KEY),
            b"SACSACSA",
            peer_system_title=METER_TITLE,
            invocation_counter=client_ic,
            omit_system_title=True,
        ),
        max_receive_pdu=pdu,
        server_max_receive_pdu=pdu,
    )
    server = ServerAssociation(
        model,
        1,
        pre_established=True,
        security=SecurityContext(
            Suite0Cipher(KEY), METER_TITLE, peer_system_title=b"SACSACSA", invocation_counter=500
        ),
        client_max_receive_pdu=pdu,
        max_receive_pdu=pdu,
    )
    return client, server


# --- the vectors, sent and received by the client machine ---------------------------------


def test_public_client_sends_tv3_bytes_and_completes() -> None:
    client = ClientAssociation(16, conformance=0x401E5D, max_receive_pdu=0xFFFF)
    client.associate()
    assert client.data_to_send() == vbytes("TV3-AARQ-PUBLIC")
    aare = AARE(AssociationResult.ACCEPTED, 0, InitiateResponse(0x00501F, 500))
    [accepted] = client.receive_data(encode_wrapper(1, 16, aare.to_bytes()))
    assert isinstance(accepted, AssociationAccepted)
    assert client.server_max_receive_pdu == 500
    iid = client.get(1, LDN)
    assert client.data_to_send() == vbytes("TV3-GET-LDN")
    answer = GetResponseNormal(0xC0 | iid, OctetString(b"FIO0000012345678"))
    [done] = client.receive_data(encode_wrapper(1, 16, answer.to_bytes()))
    assert done == GetCompleted(iid, AttributeDescriptor(1, LDN, 2), b"FIO0000012345678")
    client.release()
    assert client.data_to_send() == encode_wrapper(16, 1, vbytes("TV3-RLRQ"))
    [released] = client.receive_data(encode_wrapper(1, 16, vbytes("TV3-RLRE")))
    assert isinstance(released, Released) and client.state is State.RELEASED


@pytest.mark.parametrize("vid", ["TV4-GET-PDR-GGC", "TV4-ACTION-RECONNECT-GGC"])
def test_management_client_sends_tv4_bytes(vid: str) -> None:
    v = vector(vid)
    client = ClientAssociation(
        1,
        pre_established=True,
        security=SecurityContext(
            Suite0Cipher(KEY),
            b"SACSACSA",
            peer_system_title=METER_TITLE,
            invocation_counter=v["invocation_counter"],
            omit_system_title=True,
        ),
    )
    if "GET" in vid:
        client.get(1, PDR)
    else:
        client.action(70, VALVE, 2, Integer(0))
    assert client.data_to_send() == vbytes(vid)
    assert client.security.invocation_counter == v["invocation_counter"] + 1


def test_block_exchange_vector_through_the_client() -> None:
    steps = [bytes.fromhex(s["hex"]) for s in vector("GET-BLOCK-EXCHANGE")["sequence"]]
    client = ClientAssociation(16)
    client.state = State.ASSOCIATED  # the vector starts after the association
    client.get(7, Obis("1.0.99.1.0.255"))
    events: list[Any] = []
    for i, step in enumerate(steps):
        if i % 2 == 0:  # what the head-end sends: our machine must send exactly that
            assert client.data_to_send() == encode_wrapper(16, 1, step)
        else:
            events += client.receive_data(encode_wrapper(1, 16, step))
    [done] = events
    assert done.result == Array(DoubleLongUnsigned(i) for i in (1, 2, 3, 4, 5))
    assert client.pending == () and client.data_to_send() == b""


# --- client and server machines together --------------------------------------------------


def test_public_association_reads_and_is_refused_the_rest() -> None:
    model = MeterModel()
    client, server = ClientAssociation(16), ServerAssociation(model, 16)
    client.associate()
    assert isinstance(pump(client, server)[0], AssociationAccepted)
    client.get_list([(AttributeDescriptor(1, LDN, 2), None), (AttributeDescriptor(1, FC, 2), None)])
    client.get(1, PDR)
    client.set(1, PDR, 2, VisibleString("x"))
    ldn_fc, pdr, set_pdr = pump(client, server)
    assert isinstance(ldn_fc, GetListCompleted)
    assert ldn_fc.results == (b"FIO0000012345678", 41)
    assert pdr.result == DataAccessResult.READ_WRITE_DENIED
    assert set_pdr.result == DataAccessResult.READ_WRITE_DENIED
    client.release()
    assert isinstance(pump(client, server)[0], Released)
    assert not server.associated


def test_management_ciphered_block_get_set_and_action() -> None:
    model = MeterModel()
    client, server = management_pair(model, pdu=128)
    client.get(7, PROFILE, access=range_descriptor((8, "0.0.1.0.0.255", 2, 0), None, None))
    [profile] = pump(client, server)
    assert profile.result == model.values[PROFILE] and len(profile.result) == 120
    assert client.security.invocation_counter > 43  # every block request was ciphered
    big = Array(Structure((DoubleLongUnsigned(i), LongUnsigned(i))) for i in range(50))
    client.set(7, PROFILE, 2, big)
    [stored] = pump(client, server)
    assert isinstance(stored, SetCompleted) and stored.result == DataAccessResult.SUCCESS
    assert model.values[PROFILE] == big
    client.action(70, VALVE, 1, Integer(0))
    [acted] = pump(client, server)
    assert isinstance(acted, ActionCompleted) and acted.return_parameters is NO_VALUE
    assert model.actions == [(1, Integer(0))]


def test_server_refuses_a_replayed_counter_with_the_expected_one() -> None:
    model = MeterModel()
    client, server = management_pair(model)
    client.get(1, LDN)
    pump(client, server)
    client.security.invocation_counter = 42  # a restarted head-end reusing its counter
    client.get(1, LDN)
    [failed] = pump(client, server)
    assert isinstance(failed, RequestFailed)
    assert failed.error.wire_code == ServiceError.INVOCATION_COUNTER_ERROR
    assert failed.error.invocation_counter == 43  # where the head-end starts again
    assert "expects invocation counter 43" in str(failed.error)


def test_server_answers_a_bad_tag_with_deciphering_error() -> None:
    model = MeterModel()
    client, server = management_pair(model)
    client.security.cipher = Suite0Cipher(bytes(16))  # the wrong key
    client.get(1, LDN)
    [failed] = pump(client, server)
    assert failed.error.wire_code == ServiceError.DECIPHERING_ERROR


def test_server_refuses_requests_before_association_and_unknown_mechanisms() -> None:
    model = MeterModel()
    client, server = ClientAssociation(16), ServerAssociation(model, 16)
    client.state = State.ASSOCIATED  # a client that skips the AARQ
    client.get(1, LDN)
    [failed] = pump(client, server)
    assert failed.error.wire_code == ServiceError.OPERATION_NOT_POSSIBLE
    lls = AARQ(InitiateRequest(0x1D), mechanism=Mechanism.LLS, calling_authentication_value=b"1")
    server.receive_data(encode_wrapper(16, 1, lls.to_bytes()))
    client.state = State.AWAITING_AARE
    [rejected] = client.receive_data(server.data_to_send())
    assert isinstance(rejected, AssociationRejected) and rejected.diagnostic == 11
    assert client.state is State.IDLE


def test_notification_reaches_the_client() -> None:
    model = MeterModel()
    client, server = management_pair(model)
    server.notify(OctetString(b"\x2f\x01"), long_invoke_id=7)
    [event] = client.receive_data(server.data_to_send())
    assert isinstance(event, NotificationReceived)
    assert event.notification.body == b"\x2f\x01" and event.notification.invoke_id == 7


# --- local and remote protocol errors -----------------------------------------------------


def test_local_errors() -> None:
    public = ClientAssociation(16)
    with pytest.raises(LocalProtocolError):
        public.get(1, LDN)  # not associated
    with pytest.raises(LocalProtocolError):
        public.release()
    mgmt = ClientAssociation(1, pre_established=True)
    with pytest.raises(LocalProtocolError):
        mgmt.associate()
    for _ in range(16):
        mgmt.get(1, LDN)
    with pytest.raises(LocalProtocolError, match="16 requests"):
        mgmt.get(1, LDN)
    with pytest.raises(LocalProtocolError, match="pending"):
        mgmt.release()
    failed = mgmt.abort()
    assert len(failed) == 16 and all(isinstance(e, RequestFailed) for e in failed)
    assert mgmt.state is State.ABORTED and mgmt.pending == ()


def test_remote_errors() -> None:
    client = ClientAssociation(1, pre_established=True)
    stray = GetResponseNormal(0xC5, DoubleLongUnsigned(1)).to_bytes()
    with pytest.raises(RemoteProtocolError, match="no pending request"):
        client.receive_data(encode_wrapper(1, 1, stray))
    ciphered = ClientAssociation(
        1, pre_established=True, security=SecurityContext(Suite0Cipher(KEY), b"SACSACSA")
    )
    ciphered.get(1, LDN)
    with pytest.raises(RemoteProtocolError, match="unciphered"):
        ciphered.receive_data(encode_wrapper(1, 1, GetResponseNormal(0xC1, None).to_bytes()))
    # a plain exception-response is accepted on a ciphered association: it fails the request
    exc = ExceptionResponse(1, ServiceError.INVOCATION_COUNTER_ERROR, 99).to_bytes()
    [failed] = ciphered.receive_data(encode_wrapper(1, 1, exc))
    assert failed.error.wire_code == 6 and "99" in str(failed.error)


def test_block_out_of_order_fails_the_request() -> None:
    client = ClientAssociation(1, pre_established=True)
    iid = client.get(7, PROFILE)
    client.data_to_send()
    wrong = GetResponseWithDatablock(0xC0 | iid, False, 2, b"\x01\x02").to_bytes()
    [failed] = client.receive_data(encode_wrapper(1, 1, wrong))
    assert isinstance(failed, RequestFailed) and "block 2" in str(failed.error)
