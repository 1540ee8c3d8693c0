"""The SAC's push listener against gurux-dlms, an independent DLMS implementation, over TCP.

gurux plays the meter (tests/interop/gurux_peer.py): it builds and ciphers the pushes
(DATA-NOTIFICATION in general-glo-ciphering, with the meter's system title on the wire or
Italy-style without it, in gurux's own wrapper), decrypts and decodes every request the SAC
sends in the session that follows, and builds and ciphers the answers.  Our code only
supplies the compact buffer the push carries (``CF47.encode``): the payload, not the protocol.

What it proves, on SQLite and on PostgreSQL:

* a gurux push is stored, found by its system title or, without one, by its source address;
* the same push sent again is refused as a replay and stores nothing;
* a queued valve-close runs in the push session with the requests of docs/uni-ts-11291.md §1.6
  (ACTION 70/0.0.96.3.10.255/1 integer(0), then GET of control_state), ciphered so that
  gurux reads them, the Management counter starting at the frame's FC + 1; with the
  Fiorentini profile the SAC's ciphered requests carry an empty system title.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from sac.dlms import Obis
from sac.profiles import uni_ts_system_title
from sac.profiles.layouts import CF47
from sac.store import Actor, CommandState, NewMeter
from sac.store.connector import Store
from tests.acquisition.conftest import Backend, Sac
from tests.interop.gurux_peer import (
    Cipher,
    gx_action_response,
    gx_data_notification,
    gx_decode_apdu,
    gx_decrypt,
    gx_get_response,
    strip_wrapper,
)

KEY = bytes.fromhex("5ac0ffee00112233445566778899aabb")  # the meter's Management key (EK = AK)
SAC_TITLE = b"SACSACSA"  # the SAC's default system title (docs/uni-ts-11291.md §3)
METER_TITLE = uni_ts_system_title("FIO", 12345678)
LDN = "FIO0000012345678"
MANAGEMENT = 1  # client SAP of the Management client (and the meter's logical device)
INDEX = Obis("7.0.13.2.0.255")
VALVE = "0.0.96.3.10.255"
GENERIC = "uni-ts-11291-12-2"
LITRES = 987_654
PUSH_IC = 1000  # the meter's invocation counter in its push


def compact(index: int = LITRES, management_fc: int = 0) -> bytes:
    """A CF47 compact buffer (docs/uni-ts-11291.md §2.4): only the payload of the push."""
    return CF47.encode(
        {
            "unix_time": int(time.time()),
            "pp4_network_status": 0,
            "valve_output_state": True,
            "valve_control_state": 1,
            "metrological_event_counter": 3,
            "event_counter": 17,
            "daily_diagnostic": 0,
            "converted_volume_index": index,
            "converted_volume_index_under_alarm": 0,
            "billing_period_counter": 2,
            "management_frame_counter": management_fc,
            "spare": b"",
        }
    )


def gurux_push(buffer: bytes, *, title_on_wire: bool, ic: int = PUSH_IC) -> bytes:
    """The wrapper frame of a DATA-NOTIFICATION whose body is ``buffer`` as an octet-string,
    encoded, ciphered (general-glo-ciphering, suite 0, SC 0x30) and wrapped by gurux."""
    cipher = Cipher(KEY, METER_TITLE, ic, italy=not title_on_wire)
    body = {"type": "octet-string", "value": buffer}
    frame = gx_data_notification(body, 1, cipher=cipher, wrapped=True)
    # gurux's wrapper: version 1, from the meter's logical device 1 to the Management client 1
    assert struct.unpack(">HHH", frame[:6]) == (1, MANAGEMENT, MANAGEMENT)
    assert frame[8:10] == (b"\xdb\x08" if title_on_wire else b"\xdb\x00")
    return frame


def meter_answer(ic: int, omit_title: bool) -> dict[str, Any]:
    """gurux options for an answer of the meter (logical device 1 to client 1), ciphered."""
    cipher = Cipher(KEY, METER_TITLE, ic, italy=omit_title)
    return {"client_sap": MANAGEMENT, "server_sap": 1, "cipher": cipher, "wrapped": True}


class GuruxMeter(Protocol):
    """The meter's end of the connection: splits the SAC's byte stream into wrapper frames
    (header checked by gurux's adapter); ``None`` in the queue once the connection is gone."""

    def __init__(self) -> None:
        self.buffer = b""
        self.frames: DeferredQueue[tuple[int, int, bytes] | None] = DeferredQueue()
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.received: list[tuple[int, int, bytes]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            _version, source, destination, length = struct.unpack(">HHHH", self.buffer[:8])
            if len(self.buffer) < 8 + length:
                return
            frame, self.buffer = self.buffer[: 8 + length], self.buffer[8 + length :]
            pdu = (source, destination, strip_wrapper(frame))
            self.received.append(pdu)
            self.frames.put(pdu)

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.frames.put(None)
        self.ended.callback(None)

    async def request(self) -> tuple[int, int, bytes]:
        pdu = await self.frames.get()
        assert pdu is not None, f"the SAC closed the connection: {self.reason}"
        return pdu


async def connect(port: int) -> GuruxMeter:
    meter = GuruxMeter()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), meter)
    return meter


async def push_and_wait(port: int, frame: bytes) -> tuple[GuruxMeter, Failure]:
    """Send one gurux push on a new connection; (the meter, why the connection ended)."""
    meter = await connect(port)
    meter.transport.write(frame)
    await meter.ended
    assert meter.reason is not None
    return meter, meter.reason


async def open_sac(
    backend: Backend, sacs: list[Sac], profile: str, by_ip: bool, **sac: Any
) -> tuple[Store, Sac, int]:
    """A store with one meter provisioned by hand (its key known), and a SAC listening."""
    store = backend.make()
    await store.open()
    await store.meters.add(
        NewMeter(
            LDN,
            pdr="01234567890123",
            system_title=METER_TITLE,
            profile=profile,
            allowed_ips=("127.0.0.1",) if by_ip else (),
        )
    )
    await store.keys.set(LDN, MANAGEMENT, KEY)
    made = Sac(store, **sac)
    sacs.append(made)
    return store, made, await made.listen()


TITLES = [pytest.param(True, id="system-title"), pytest.param(False, id="empty-title")]


@pytest.mark.parametrize("title_on_wire", TITLES)
@pytest_twisted.ensureDeferred
async def test_a_gurux_push_is_stored(
    backend: Backend, sacs: list[Sac], title_on_wire: bool
) -> None:
    # without a title on the wire the SAC finds the meter by the address it calls from
    store, sac, port = await open_sac(backend, sacs, GENERIC, by_ip=not title_on_wire)
    frame = gurux_push(compact(LITRES), title_on_wire=title_on_wire)
    meter, reason = await push_and_wait(port, frame)
    assert reason.check(ConnectionDone), reason  # a clean close: the push is acknowledged
    assert meter.received == []  # no command waits: the SAC says nothing
    [reading] = await store.readings.last(LDN, INDEX)
    assert reading.value == LITRES and (reading.scaler, reading.unit) == (-3, 14)
    row = await store.meters.get(LDN)
    assert row is not None and row.last_connection is not None
    assert row.index_value == LITRES and row.valve_state == 1
    assert (await store.counters.last(LDN, MANAGEMENT))[1] == PUSH_IC
    assert sac.acquisition.metrics.value("sac_push_stored_total") == 1
    assert sac.acquisition.metrics.total("sac_push_rejected_total") == 0


@pytest.mark.parametrize("title_on_wire", TITLES)
@pytest_twisted.ensureDeferred
async def test_a_replayed_gurux_push_is_refused(
    backend: Backend, sacs: list[Sac], title_on_wire: bool
) -> None:
    store, sac, port = await open_sac(backend, sacs, GENERIC, by_ip=not title_on_wire)
    frame = gurux_push(compact(LITRES), title_on_wire=title_on_wire)
    _, first = await push_and_wait(port, frame)
    assert first.check(ConnectionDone), first
    stored = await store.readings.count()
    before = await store.meters.get(LDN)
    assert before is not None and before.last_connection is not None

    meter, again = await push_and_wait(port, frame)  # the very same bytes
    assert again.check(ConnectionLost), again  # aborted (RST), not acknowledged with a FIN
    assert meter.received == []
    metrics = sac.acquisition.metrics
    assert metrics.value("sac_push_rejected_total", reason="replay") == 1
    assert metrics.value("sac_push_stored_total") == 1
    assert await store.readings.count() == stored
    assert len(await store.readings.last(LDN, INDEX, limit=10)) == 1
    after = await store.meters.get(LDN)
    assert after is not None and after.last_connection == before.last_connection
    assert (await store.counters.last(LDN, MANAGEMENT))[1] == PUSH_IC


@pytest.mark.parametrize(
    ("profile", "omit_title"),
    [pytest.param(GENERIC, False, id=GENERIC), pytest.param("fiorentini", True, id="fiorentini")],
)
@pytest_twisted.ensureDeferred
async def test_the_sacs_valve_close_decodes_in_gurux(
    backend: Backend, sacs: list[Sac], profile: str, omit_title: bool
) -> None:
    store, _sac, port = await open_sac(backend, sacs, profile, by_ip=False)
    command = await store.commands.queue(LDN, "valve-close", {}, Actor("t"), priority=20)
    meter = await connect(port)
    # the frame says the meter's Management frame counter is 41: no Public association,
    # the SAC's first Management request carries 42
    meter.transport.write(gurux_push(compact(LITRES, management_fc=41), title_on_wire=True))
    # the SAC's title on the wire (generic profile), or none (Fiorentini): gurux then needs
    # to be told the sender's title, which makes the IV
    title = {"system_title": SAC_TITLE} if omit_title else {}
    prefix = b"\xdb\x00" if omit_title else b"\xdb\x08" + SAC_TITLE
    header = {"tag": 0xDB, "system_title": "" if omit_title else SAC_TITLE.hex()}

    source, destination, apdu = await meter.request()
    assert (source, destination) == (MANAGEMENT, 1)  # from the Management client to the meter
    assert apdu.startswith(prefix)
    action = gx_decode_apdu(apdu, KEY, **title)  # gurux decrypts, checks the tag, decodes
    assert action["service"] == "action-request-normal"
    assert (action["class_id"], action["obis"], action["method"]) == (70, VALVE, 1)
    assert action["value"] == {"type": "integer", "value": 0}
    assert action["ciphering"] == {**header, "security_control": 0x30, "ic": 42}
    if omit_title:  # the IV is built from "SACSACSA": under another title the tag is wrong
        with pytest.raises(ValueError, match="mismatch"):
            gx_decrypt(apdu, KEY, METER_TITLE)
    iid = action["invoke_id_and_priority"]
    meter.transport.write(gx_action_response(0, iid=iid, **meter_answer(PUSH_IC + 1, omit_title)))

    source, destination, apdu = await meter.request()
    assert (source, destination) == (MANAGEMENT, 1)
    assert apdu.startswith(prefix)
    get = gx_decode_apdu(apdu, KEY, **title)
    assert get["service"] == "get-request-normal"
    assert (get["class_id"], get["obis"], get["attribute"]) == (70, VALVE, 3)  # control_state
    assert "access_selector" not in get
    assert get["ciphering"] == {**header, "security_control": 0x30, "ic": 43}
    answer = gx_get_response(
        {"type": "enum", "value": 0},
        iid=get["invoke_id_and_priority"],
        **meter_answer(PUSH_IC + 2, omit_title),
    )
    meter.transport.write(answer)

    await meter.ended  # the SAC ends the session cleanly (FIN), having asked nothing else
    assert meter.reason is not None and meter.reason.check(ConnectionDone), meter.reason
    assert len(meter.received) == 2  # nothing else was asked (no RLRQ: pre-established)
    done = await store.commands.get(command.id)
    assert done.state is CommandState.DONE, done.result
    assert "control_state 0" in (done.result or "")
    row = await store.meters.get(LDN)
    assert row is not None and row.valve_state == 0 and row.index_value == LITRES
    ours, theirs = await store.counters.last(LDN, MANAGEMENT)
    assert ours >= 43 and theirs == PUSH_IC + 2  # the meter's last answer is recorded
