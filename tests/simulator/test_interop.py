"""gurux-dlms, an independent DLMS implementation, against the simulated meter over real TCP.

Gurux builds every request and decodes every answer (tests/interop/gurux_peer.py); our side
only carries bytes.  Public client: AARQ, GET LDN and frame counter, RLRQ.  Management
client, pre-established with general-glo-ciphering and IC = FC + 1: GET the converted-volume
index and the valve state, close the valve.  Pushes: gurux decrypts what the meter sends.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from sac.dlms.compact import decode_compact
from sac.dlms.wrapper import WrapperFramer
from sac.profiles import discover_profiles, uni_ts_system_title
from sac.simulator.life import ValveState
from sac.simulator.meter import SimulatedMeter
from sac.simulator.session import MeterProtocol, MeterServerFactory
from tests.interop.gurux_peer import (
    Cipher,
    gx_aarq,
    gx_action_request,
    gx_decode_apdu,
    gx_decode_data,
    gx_get_request,
    gx_get_request_by_entry,
    gx_get_request_next,
    gx_rlrq,
)

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SAC_TITLE = b"SACSACSA"
REGISTRY = discover_profiles().registry


def meter(profile: str = "uni-ts-11291-12-2", flag: str = "FIO") -> SimulatedMeter:
    clock = reactor.seconds
    return SimulatedMeter(
        ldn=f"{flag}0000012345678",
        system_title=uni_ts_system_title(flag, 12345678),
        key=KEY,
        profile=REGISTRY[profile],
        clock=clock,
        rng=random.Random(1),
        pdr="01234567890123",
        index_litres=987_654,
        invocation_counter=1000,
    )


class Peer(Protocol):
    """Carries bytes: splits the stream into wrapper PDUs, nothing more."""

    def __init__(self) -> None:
        self.framer = WrapperFramer(4096)
        self.pdus: DeferredQueue[Any] = DeferredQueue()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.framer.feed(data):
            self.pdus.put(pdu)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    async def ask(self, frame: bytes) -> bytes:
        self.transport.write(frame)
        pdu = await self.pdus.get()
        return pdu.apdu


@pytest_twisted.ensureDeferred
async def test_gurux_reads_and_closes_the_valve_of_a_listening_meter() -> None:
    m = meter()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(MeterServerFactory(m))
    peer = Peer()
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), peer)
        public = {"client_sap": 16, "wrapped": True}
        aare = gx_decode_apdu(await peer.ask(gx_aarq(**public)))
        assert aare["service"] == "aare" and aare["result"] == 0
        ldn = gx_decode_apdu(await peer.ask(gx_get_request(1, "0.0.42.0.0.255", 2, **public)))
        assert bytes.fromhex(ldn["value"]["value"]).decode() == m.ldn
        fc = gx_decode_apdu(await peer.ask(gx_get_request(1, "0.0.43.1.1.255", 2, **public)))
        counter = fc["value"]["value"]
        assert counter == 0
        # the Public client may not read the index
        denied = gx_decode_apdu(await peer.ask(gx_get_request(3, "7.0.13.2.0.255", 2, **public)))
        assert denied["data_access_result"] == 3  # read-write-denied
        assert gx_decode_apdu(await peer.ask(gx_rlrq(**public)))["service"] == "rlre"

        def management(ic: int) -> dict[str, Any]:
            cipher = Cipher(KEY, SAC_TITLE, ic)  # Italy mode: no system title on the wire
            return {"client_sap": 1, "wrapped": True, "cipher": cipher, "iid": 0xC1}

        async def ask_ciphered(frame: bytes) -> dict[str, Any]:
            return gx_decode_apdu(await peer.ask(frame), KEY, m.system_title)

        ic = counter + 1
        index = await ask_ciphered(gx_get_request(3, "7.0.13.2.0.255", 2, **management(ic)))
        assert index["ciphering"]["system_title"] == m.system_title.hex()
        assert index["value"] == {"type": "double-long-unsigned", "value": m.index_litres}
        assert m.index_litres >= 987_654
        scaler_unit = await ask_ciphered(
            gx_get_request(3, "7.0.13.2.0.255", 3, **management(ic + 1))
        )
        assert [v["value"] for v in scaler_unit["value"]["value"]] == [-3, 14]
        state = await ask_ciphered(gx_get_request(70, "0.0.96.3.10.255", 3, **management(ic + 2)))
        assert state["value"] == {"type": "enum", "value": ValveState.CONNECTED}
        close = gx_action_request(
            70, "0.0.96.3.10.255", 1, {"type": "integer", "value": 0}, **management(ic + 3)
        )
        closed = await ask_ciphered(close)
        assert closed["service"] == "action-response-normal" and closed["result"] == 0
        assert m.valve_state == ValveState.DISCONNECTED
        state = await ask_ciphered(gx_get_request(70, "0.0.96.3.10.255", 3, **management(ic + 4)))
        assert state["value"]["value"] == ValveState.DISCONNECTED
        # a replayed counter is refused, in clear, with the counter the meter expects
        replay = await peer.ask(gx_get_request(3, "7.0.13.2.0.255", 2, **management(ic + 4)))
        assert replay[0] == 0xD8 and int.from_bytes(replay[-4:], "big") == ic + 5
        assert m.sac_counter == ic + 4
    finally:
        peer.transport.loseConnection()
        await peer.lost
        await port.stopListening()


class Sink(Protocol):
    def __init__(self, got: DeferredQueue[Any]) -> None:
        self.framer = WrapperFramer(4096)
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.framer.feed(data):
            self.got.put(pdu)
            self.transport.loseConnection()


@pytest.mark.parametrize(
    ("profile", "flag", "template"),
    [("uni-ts-11291-12-2", "XYZ", 47), ("honeywell-ei7", "ELS", 30), ("fiorentini", "FIO", 18)],
)
@pytest_twisted.ensureDeferred
async def test_gurux_decrypts_the_meters_pushes(profile: str, flag: str, template: int) -> None:
    got: DeferredQueue[Any] = DeferredQueue()
    sac = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: Sink(got))
    )
    m = meter(profile, flag)
    try:
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", sac.getHost().port),
            MeterProtocol(m, push_template=template),
        )
        pdu = await got.get()
        assert (pdu.source, pdu.destination) == (1, 1)
        push = gx_decode_apdu(pdu.apdu, KEY, m.system_title)
        assert push["service"] == "data-notification"
        assert push["ciphering"]["system_title"] == m.system_title.hex()
        assert push["ciphering"]["ic"] == 1000 and m.our_counter == 1001
        buffer = bytes.fromhex(push["value"]["value"])
        frame = decode_compact(buffer, REGISTRY[profile].layouts)
        assert frame.template_id == template
        assert frame["unix_time"] == pytest.approx(reactor.seconds(), abs=5)
        if template != 18:
            assert frame["valve_control_state"] == ValveState.CONNECTED
        index_field = "converted_volume_index" if template != 30 else None
        if index_field:
            assert frame[index_field] == m.index_litres
        else:
            assert frame["primary_battery_residual_pct"] == m.battery == 93
    finally:
        await sac.stopListening()


@pytest_twisted.ensureDeferred
async def test_gurux_reads_a_long_daily_profile_in_blocks() -> None:
    m = meter()
    day = 86_400
    base = int(reactor.seconds()) // day * day - 60 * day
    m.daily.extend((base + i * day, 0, 1000 * i, 0) for i in range(60))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(MeterServerFactory(m))
    peer = Peer()
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), peer)
        ic = 1

        def management() -> dict[str, Any]:
            nonlocal ic
            ic += 1
            return {"client_sap": 1, "wrapped": True, "cipher": Cipher(KEY, SAC_TITLE, ic)}

        first = gx_decode_apdu(
            await peer.ask(gx_get_request_by_entry("7.0.99.99.3.255", 1, 0, **management())),
            KEY,
            m.system_title,
        )
        assert first["service"] == "get-response-with-datablock" and first["block_number"] == 1
        raw, block = bytes.fromhex(first["raw_data"]), first
        while not block["last_block"]:
            nxt = gx_get_request_next(block["block_number"], **management())
            block = gx_decode_apdu(await peer.ask(nxt), KEY, m.system_title)
            raw += bytes.fromhex(block["raw_data"])
        assert block["block_number"] >= 3  # 60 entries do not fit in 504-byte PDUs
        rows = gx_decode_data(raw)["value"]
        assert len(rows) == 60
        assert [r["value"][2]["value"] for r in rows] == [1000 * i for i in range(60)]
    finally:
        peer.transport.loseConnection()
        await peer.lost
        await port.stopListening()
