"""Push sessions that go wrong: each one ends its own connection with a reason, counted,
and nothing wrong is stored; the store going away loses nothing."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.portforward import ProxyFactory

from sac.dlms import Obis
from sac.errors import StorageError
from sac.services.acquisition import encode_record
from sac.services.spool import Spool
from sac.simulator.session import MeterProtocol
from sac.store import Actor, CommandState
from sac.store.postgres import PostgresStore
from tests.acquisition.conftest import (
    Backend,
    Sac,
    failures_logged,
    make_fleet,
    provision,
    push_once,
    started,
)
from tests.store.conftest import MASTER

INDEX = Obis("7.0.13.2.0.255")


def push_bytes(meter: Any) -> bytes:
    """The wrapper PDU of one push of ``meter``, as it would send it."""
    protocol = MeterProtocol(meter, push_template=meter.profile.push_templates[0], reactor=reactor)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.connectionLost(None)
    return transport.value()


class Raw(Protocol):
    """Sends bytes, records how the SAC ended the connection."""

    def __init__(self, data: bytes, then_close: bool = False) -> None:
        self.data = data
        self.then_close = then_close
        self.ended: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        if self.then_close:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback([reason])  # a Failure in a list: a result, not an error


async def send_raw(port: int, data: bytes, then_close: bool = False) -> Any:
    protocol = Raw(data, then_close)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    [reason] = await protocol.ended
    return reason


def rejected(sac: Sac, reason: str) -> int:
    return sac.acquisition.metrics.value("sac_push_rejected_total", reason=reason)


@pytest_twisted.ensureDeferred
async def test_an_unknown_meter_is_refused(backend: Backend, sacs: list[Sac]) -> None:
    store, _fleet, sac, port = await started(backend, sacs)
    stranger = make_fleet(1, seed=7, first_serial=500).meters[0]
    reason = await send_raw(port, push_bytes(stranger))
    assert not reason.check(ConnectionDone)  # aborted, not acknowledged
    assert rejected(sac, "unknown-meter") == 1
    assert await store.readings.count() == 0


@pytest_twisted.ensureDeferred
async def test_a_wrong_key_is_refused_and_nothing_is_stored(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    await store.keys.set(m.ldn, 1, bytes(16))  # not the meter's key
    reason = await send_raw(port, push_bytes(m))
    assert not reason.check(ConnectionDone)
    assert rejected(sac, "bad-tag") == 1
    assert await store.readings.count() == 0
    assert await store.counters.last(m.ldn, 1) == (0, None)  # its counter not learnt


@pytest_twisted.ensureDeferred
async def test_a_replayed_push_is_refused(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    frame = push_bytes(m)
    assert (await send_raw(port, frame)).check(ConnectionDone)
    stored = await store.readings.count()
    assert not (await send_raw(port, frame)).check(ConnectionDone)
    assert rejected(sac, "replay") == 1
    assert await store.readings.count() == stored
    # the same replay with the meter's entry cached and a second SAC process (no cache):
    # the check in the store's transaction refuses it too
    other = Sac(store, cache_seconds=0)
    sacs.append(other)
    assert not (await send_raw(await other.listen(), frame)).check(ConnectionDone)
    assert rejected(other, "replay") == 1


@pytest_twisted.ensureDeferred
async def test_truncated_and_oversized_frames_close_only_their_connection(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    frame = push_bytes(m)
    # the stream ends inside the PDU: nothing to store, nothing broken
    await send_raw(port, frame[: len(frame) // 2], then_close=True)
    # a complete wrapper PDU around a cut APDU
    cut = frame[8 : len(frame) - 20]
    await send_raw(port, struct.pack(">HHHH", 1, 1, 1, len(cut)) + cut)
    assert rejected(sac, "malformed") == 1
    # a header announcing 60,000 bytes: refused on the header, before any body is read
    reason = await send_raw(port, struct.pack(">HHHH", 1, 1, 1, 60_000) + bytes(100))
    assert not reason.check(ConnectionDone)
    assert sac.acquisition.metrics.value("sac_push_closed_total", reason="malformed") == 2
    assert await store.readings.count() == 0
    # and the meter's real push still goes through
    assert (await send_raw(port, frame)).check(ConnectionDone)
    assert await store.readings.count() > 0


class Mute(MeterProtocol):
    """A meter that pushes, then never answers."""

    def dataReceived(self, data: bytes) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_meter_that_stops_answering_gets_its_command_back_in_the_queue(
    backend: Backend, sacs: list[Sac]
) -> None:
    from sac.protocols.push import ListenerSettings

    store, fleet, sac, port = await started(
        backend, sacs, listener=ListenerSettings(response_timeout=0.5)
    )
    [m] = fleet.meters
    command = await store.commands.queue(m.ldn, "valve-close", {}, Actor("olivia"))
    protocol = Mute(m, push_template=m.profile.push_templates[0], reactor=reactor)
    ended: Deferred[Any] = Deferred()
    protocol.connectionLost = lambda reason=None: ended.callback([reason])  # type: ignore[method-assign]
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    [reason] = await ended
    assert not reason.check(ConnectionDone)
    assert sac.acquisition.metrics.value("sac_push_closed_total", reason="response-timeout") == 1
    again = await store.commands.get(command.id)
    assert again.state is CommandState.PENDING and "no answer" in (again.result or "")
    assert await store.readings.count() > 0  # the push itself was stored first
    # the next session runs it
    await push_once(port, m)
    assert (await store.commands.get(command.id)).state is CommandState.DONE


# --- the store goes away ---------------------------------------------------------------------


class Cuttable:
    """A TCP proxy in front of PostgreSQL that can be cut (connections dropped, new ones
    refused) and restored: the store 'down' without touching the server."""

    def __init__(self, host: str, port: int) -> None:
        self.factory = ProxyFactory(host, port)
        self.port: Any = None
        self.number = 0
        self.servers: set[Any] = set()
        build = self.factory.buildProtocol

        def tracked(addr: Any) -> Any:
            protocol = build(addr)
            self.servers.add(protocol)
            return protocol

        self.factory.buildProtocol = tracked  # type: ignore[method-assign]

    async def up(self) -> int:
        self.port = await TCP4ServerEndpoint(reactor, self.number, interface="127.0.0.1").listen(
            self.factory
        )
        self.number = self.port.getHost().port
        return self.number

    async def down(self) -> None:
        await self.port.stopListening()
        for server in list(self.servers):
            if server.transport is not None:
                server.transport.abortConnection()
        self.servers.clear()


async def behind_a_proxy(backend: Backend) -> tuple[Cuttable, PostgresStore]:
    """An opened store on ``backend``'s PostgreSQL, reached through a Cuttable proxy."""
    proxy = Cuttable("127.0.0.1", 5432)
    proxy_port = await proxy.up()
    dsn = backend.dsn.replace("host=127.0.0.1 port=5432", f"host=127.0.0.1 port={proxy_port}")
    assert dsn != backend.dsn
    store = PostgresStore(dsn, MASTER, connections=2)
    backend.stores.append(store)
    await store.open()
    return proxy, store


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_the_store_down_for_30_s_during_a_push_burst_loses_nothing(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    if backend.kind != "postgresql":
        pytest.skip("the store is cut at its network connection: PostgreSQL")
    setup = backend.make()
    await setup.open()
    fleet = make_fleet(20)
    await provision(setup, fleet)
    proxy, store = await behind_a_proxy(backend)
    spool = Spool(tmp_path / "spool")
    await spool.open()
    sac = Sac(store, spool=spool, store_timeout=2.0)
    sacs.append(sac)
    port = await sac.listen()
    sac.acquisition.start(replay_every=0.5)
    acknowledged: dict[str, int] = {m.ldn: 0 for m in fleet.meters}

    async def burst() -> None:
        for m in fleet.meters:
            protocol = await push_once(port, m)
            if protocol.end_reason.check(ConnectionDone):
                acknowledged[m.ldn] += 1

    await burst()  # the store up
    await proxy.down()
    await deferLater(reactor, 1.1, lambda: None)  # each burst in a second of its own
    for _ in range(6):  # 30 s without the store, a burst every 5 s
        await burst()
        await deferLater(reactor, 5.0, lambda: None)
    assert spool.depth == 6 * len(fleet.meters)
    assert sac.acquisition.metrics.value("sac_push_spooled_total") == spool.depth
    await proxy.up()
    for _ in range(600):  # replayed as soon as the store answers again
        if not spool.depth:
            break
        await deferLater(reactor, 0.1, lambda: None)
    sac.acquisition.stop()
    await spool.close()
    assert spool.depth == 0
    for m in fleet.meters:
        assert acknowledged[m.ldn] == 7
        readings = await setup.readings.last(m.ldn, INDEX, limit=100)
        # one index a push (each push's frame has its own UNIX time), none lost, none twice
        pushes = [r for r in readings if r.source == "cf47"]
        assert len({r.captured for r in pushes}) == len(pushes) == 7
        assert await setup.counters.last(m.ldn, 1) == (0, m.our_counter - 1)


@pytest_twisted.ensureDeferred
async def test_a_push_after_a_spooled_one_of_the_same_meter_waits_behind_it(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    """Found by the soak (tests/run/test_soak.py), before and after issue 18's changes: a
    push spooled while the store was away (its write failed), then the meter's next push
    stored directly as the store came back, before the spool's replay: the spooled one,
    older, was refused as a replay and dropped -- acknowledged, never stored.  Now a meter
    with a push on the spool has its next ones spooled behind it."""
    from tests.acquisition.test_tampering import later

    setup = backend.make()
    await setup.open()
    fleet = make_fleet(2)
    await provision(setup, fleet)
    m, other = fleet.meters
    if backend.kind == "postgresql":  # the network to the server cut: writes fail at once
        proxy, store = await behind_a_proxy(backend)
    else:  # the database locked past SQLite's busy timeout: the write fails
        store = setup
    spool = Spool(tmp_path / "spool")
    await spool.open()
    sac = Sac(store, spool=spool, store_timeout=2.0)
    sacs.append(sac)
    port = await sac.listen()
    for meter in (m, other):
        assert (await send_raw(port, push_bytes(meter))).check(ConnectionDone)
    if backend.kind == "postgresql":
        await proxy.down()
    else:
        release = backend.lock()
    assert (await send_raw(port, later(m))).check(ConnectionDone)
    assert spool.depth == 1
    for _ in range(1000):  # a guard, not a measure: until its write has failed
        if not sac.acquisition.writer._running:
            break
        await deferLater(reactor, 0.01, lambda: None)
    if backend.kind == "postgresql":
        await proxy.up()
        for _ in range(200):  # until the store answers again, on each of its connections
            pings = [Deferred.fromCoroutine(store.ping()) for _ in range(2)]
            results = await DeferredList(pings, consumeErrors=True)
            if all(ok for ok, _ in results):
                break
            await deferLater(reactor, 0.1, lambda: None)
    else:
        release()
    # the store is back, the spool not replayed yet: the meter's next push goes behind it
    assert (await send_raw(port, later(m))).check(ConnectionDone)
    assert spool.depth == 2
    assert (await send_raw(port, later(other))).check(ConnectionDone)  # stored at once
    assert spool.depth == 2
    assert await sac.acquisition.replay_spool() == 2
    assert rejected(sac, "replay") == 0
    # each acknowledged push stored (an hour apart on its clock: readings of their own)
    assert len(await setup.readings.last(m.ldn, INDEX, limit=10)) == 3
    assert await setup.counters.last(m.ldn, 1) == (0, m.our_counter - 1)
    # the spool empty, the meter's pushes are stored at once again
    assert (await send_raw(port, later(m))).check(ConnectionDone)
    assert spool.depth == 0 and len(await setup.readings.last(m.ldn, INDEX, limit=10)) == 4
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_pushes_wait_behind_the_spool_left_by_the_process_before(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    """The same after a restart: the spool holds a push from before (whose meter this
    process has not counted), so every push is spooled behind what is left of it."""
    import datetime as dt

    from sac.services.acquisition import encode_record
    from tests.acquisition.test_tampering import later

    store = backend.make()
    await store.open()
    fleet = make_fleet(1)
    await provision(store, fleet)
    [m] = fleet.meters
    spool = Spool(tmp_path / "spool")
    await spool.open()
    # acknowledged by the process before, which died before replaying it
    apdu = push_bytes(m)[8:]  # (past the wrapper header)
    await spool.append(encode_record(apdu, "127.0.0.1", dt.datetime.now(dt.UTC)))
    sac = Sac(store, spool=spool)
    sacs.append(sac)
    port = await sac.listen()
    assert await sac.acquisition.directory.load() == 1  # as start() does, without the replay
    assert (await send_raw(port, later(m))).check(ConnectionDone)
    assert spool.depth == 2
    assert await sac.acquisition.replay_spool() == 2
    assert sac.acquisition.metrics.total("sac_push_rejected_total") == 0
    assert len(await store.readings.last(m.ldn, INDEX, limit=10)) == 2
    assert await store.counters.last(m.ldn, 1) == (0, m.our_counter - 1)
    assert (await send_raw(port, later(m))).check(ConnectionDone)  # at once again
    assert spool.depth == 0 and len(await store.readings.last(m.ldn, INDEX, limit=10)) == 3
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_pushes_over_udp_are_stored_and_bad_datagrams_counted(
    backend: Backend, sacs: list[Sac]
) -> None:
    from twisted.internet.protocol import DatagramProtocol

    from sac.services.push import PushDatagramProtocol

    store, fleet, sac, _port = await started(backend, sacs)
    [m] = fleet.meters
    listener = reactor.listenUDP(0, PushDatagramProtocol(sac.acquisition), interface="127.0.0.1")
    sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        target = ("127.0.0.1", listener.getHost().port)
        sender.write(b"\x00\x01garbage", target)
        sender.write(push_bytes(m), target)
        for _ in range(200):
            if sac.acquisition.metrics.value("sac_push_stored_total"):
                break
            await deferLater(reactor, 0.02, lambda: None)
    finally:
        await listener.stopListening()
        await sender.stopListening()
    assert sac.acquisition.metrics.value("sac_push_stored_total") == 1
    assert rejected(sac, "malformed") == 1
    assert await store.readings.last(m.ldn, INDEX)


@pytest_twisted.ensureDeferred
async def test_a_full_spool_refuses_the_push_cleanly(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    """The store down and no room on the spool: the push is refused as the store being
    unavailable (the meter gets a reset and pushes again later), not as a crash."""
    spool = Spool(tmp_path / "spool", max_bytes=16)
    await spool.open()
    store, fleet, sac, port = await started(backend, sacs, spool=spool)
    await push_once(port, fleet.meters[0])  # stored: a meter this process knows
    await store.close()  # the store is gone
    protocol = await push_once(port, fleet.meters[0])
    assert not protocol.end_reason.check(ConnectionDone)  # not acknowledged
    assert sac.acquisition.metrics.value("sac_push_closed_total", reason="store-unavailable") == 1
    assert sac.acquisition.metrics.value("sac_push_closed_total", reason="error") == 0
    assert spool.depth == 0
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_a_meter_that_hangs_up_right_after_its_push_crashes_nothing(
    backend: Backend, sacs: list[Sac]
) -> None:
    """Found by the fuzzer (tests/fuzz): the meter sends its push and closes at once; the
    SAC, done storing it, closed a connection that was gone (an AttributeError from deep in
    the socket, logged as an unexpected error).  The push is stored; the meter, which never
    saw the acknowledgement, will push again (and that one is stored too)."""
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    with failures_logged() as failures:
        for n in range(1, 6):  # one after the other, as a meter does
            await send_raw(port, push_bytes(m), then_close=True)
            for _ in range(500):
                if sac.acquisition.metrics.value("sac_push_stored_total") == n:
                    break
                await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)  # the sessions' ends, after the store
    assert not failures, failures[0].getTraceback()
    assert sac.acquisition.metrics.value("sac_push_stored_total") == 5
    assert await store.counters.last(m.ldn, 1) == (0, m.our_counter - 1)


class HangsUp(Protocol):
    """A meter that pushes, then hangs up as soon as the SAC says anything."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_meter_that_hangs_up_is_named_with_the_real_reason(
    backend: Backend, sacs: list[Sac]
) -> None:
    """The session's log line named the meter "unknown" when it hung up while its push was
    being stored (the line was written at the hang-up, before the push was identified), and
    a command cut by a hang-up went back to the queue with "connection closed: open"."""
    from twisted.logger import formatEvent, globalLogPublisher

    store, fleet, sac, port = await started(backend, sacs, store_timeout=20.0)
    [m] = fleet.meters
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if str(event.get("log_format", "")).startswith("push session from"):
            lines.append(formatEvent(event))

    async def sessions_end(count: int) -> None:
        for _ in range(1000):  # a guard against hanging, not a measure
            if len(lines) >= count:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"no session line: {lines}")

    globalLogPublisher.addObserver(observe)
    try:
        # the push held by the store (its readings locked) while the meter hangs up
        release = backend.lock()
        await send_raw(port, push_bytes(m), then_close=True)
        for _ in range(1000):
            if not sac.factory.active:  # the SAC has seen the hang-up
                break
            await deferLater(reactor, 0.01, lambda: None)
        release()
        for _ in range(1000):
            if sac.acquisition.metrics.value("sac_push_stored_total") == 1:
                break
            await deferLater(reactor, 0.01, lambda: None)
        await sessions_end(1)
        stored = lines[0]
        assert f"meter {m.ldn}: stored in" in stored, stored
        assert stored.endswith("the meter hung up before the acknowledgement"), stored
        # a command waits: the SAC asks, the meter hangs up instead of answering
        command = await store.commands.queue(m.ldn, "valve-close", {}, Actor("otto"))
        meter = HangsUp(push_bytes(m))
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), meter)
        await meter.ended
        await sessions_end(2)
    finally:
        globalLogPublisher.removeObserver(observe)
    cut = lines[1]
    assert f"meter {m.ldn}: session-failed in" in cut, cut
    assert cut.endswith("connection closed: the meter hung up"), cut
    again = await store.commands.get(command.id)
    assert again.state is CommandState.PENDING
    assert again.result == "connection closed: the meter hung up"


@pytest_twisted.ensureDeferred
async def test_a_store_too_slow_is_said_so(backend: Backend, sacs: list[Sac]) -> None:
    """The store's deadline, as the log and the spool's reason say it (it read
    "(0.05, 'Deferred')", Twisted's TimeoutError, until the secrets run showed it)."""
    from sac.services.acquisition import StoreUnavailable

    _store, _fleet, sac, _port = await started(backend, sacs, store_timeout=0.05)
    with pytest.raises(StoreUnavailable, match=r"^the store did not store the push within 0.05 s$"):
        await sac.acquisition._store("store the push", Deferred)


@pytest_twisted.ensureDeferred
async def test_a_spool_whose_disk_fails_is_said_and_tried_again_not_dropped(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    """The spool's database failing under a replay (here: its connection gone, as a disk
    error leaves it) fails that replay only: one error line, ``replay_problem`` set for
    /health, the pushes still on the spool, and the replay loop goes on."""
    spool = Spool(tmp_path / "spool")
    await spool.open()
    _store, fleet, sac, _port = await started(backend, sacs, spool=spool)
    received = dt.datetime.now(dt.UTC)
    await spool.append(encode_record(push_bytes(fleet.meters[0])[8:], "127.0.0.1", received))
    assert spool.depth == 1
    spool._db.close()  # the database gone from under the spool
    errors: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(errors.append)
    try:
        assert await sac.acquisition.replay_spool() == 0
        assert await sac.acquisition.replay_spool() == 0
    finally:
        globalLogPublisher.removeObserver(errors.append)
    said = [e for e in errors if e.get("log_format", "").startswith("spool replay failed")]
    assert len(said) == 1  # once, not at every try
    assert sac.acquisition.replay_problem and "spool" in sac.acquisition.replay_problem
    assert spool.depth == 1  # nothing dropped


@pytest_twisted.ensureDeferred
async def test_a_replay_failing_in_any_way_is_said_and_tried_again(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    """Whatever a replay meets (a store error that is not a timeout, a bug), the replay loop
    goes on: the error said once, /health told, the push kept and stored once it passes."""
    spool = Spool(tmp_path / "spool")
    await spool.open()
    store, fleet, sac, _port = await started(backend, sacs, spool=spool)
    [m] = fleet.meters
    received = dt.datetime.now(dt.UTC)
    await spool.append(encode_record(push_bytes(m)[8:], "127.0.0.1", received))
    push = sac.acquisition.push
    failures = [StorageError("deadlock detected"), RuntimeError("a bug")]

    async def failing(*args: Any, **kw: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await push(*args, **kw)

    sac.acquisition.push = failing  # type: ignore[method-assign]
    errors: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(errors.append)
    try:
        assert await sac.acquisition.replay_spool() == 0
        assert "deadlock detected" in (sac.acquisition.replay_problem or "")
        assert await sac.acquisition.replay_spool() == 0
        assert "a bug" in (sac.acquisition.replay_problem or "")
        assert spool.depth == 1  # kept
        assert await sac.acquisition.replay_spool() == 1
    finally:
        globalLogPublisher.removeObserver(errors.append)
    said = [e for e in errors if e.get("log_format", "").startswith("spool replay failed")]
    assert len(said) == 2
    assert sac.acquisition.replay_problem is None and spool.depth == 0
    assert len(await store.readings.last(m.ldn, INDEX, limit=10)) == 1
    await spool.close()
