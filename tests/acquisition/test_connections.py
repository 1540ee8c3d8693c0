"""Each session with a meter leaves its record (store.connections, written in batches by
sac.services.connections.ConnectionLog): a push stored, a push with commands, a push of an
unknown meter (kept with its peer and why), a poll with what it could not read, a poll that
failed; and a store that refuses the records costs no session."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater

from sac.errors import StorageError
from sac.services.connections import ConnectionLog, ConnectionPruning
from sac.services.poller import Poller, PollSettings
from sac.simulator.meter import EVENT_LOG
from sac.store import Actor, Connection, NewMeter
from tests.acquisition.conftest import Backend, Sac, make_fleet, push_once, started
from tests.acquisition.test_faults import push_bytes, rejected
from tests.acquisition.test_poll import REGISTRY, SETTINGS, _listening
from tests.acquisition.test_tampering import send_from


async def recorded(store: Any, ldn: str, count: int = 1) -> list[Connection]:
    """The meter's records, once ``count`` are in (the log writes every 10 ms here)."""
    for _ in range(300):
        found = await store.connections.recent(ldn)
        if len(found) >= count:
            return found
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"no {count} connections of {ldn} recorded")


@pytest_twisted.ensureDeferred
async def test_a_push_session_leaves_its_record(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    before = dt.datetime.now(dt.UTC)
    assert (await push_once(port, m)).end_reason.check(ConnectionDone)
    [c] = await recorded(store, m.ldn)
    assert (c.ldn, c.kind, c.peer, c.outcome) == (m.ldn, "push", "127.0.0.1", "stored")
    assert before - dt.timedelta(seconds=1) <= c.started <= dt.datetime.now(dt.UTC)
    assert 0 <= c.duration_ms < 10_000
    assert c.read == () and c.skipped == () and c.detail is None
    assert sac.connections.transactions >= 1


@pytest_twisted.ensureDeferred
async def test_a_push_with_commands_is_recorded_as_such(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    await store.commands.queue(m.ldn, "valve-close", {}, Actor("olivia"), priority=20)
    assert (await push_once(port, m)).end_reason.check(ConnectionDone)
    [c] = await recorded(store, m.ldn)
    assert c.outcome == "commands" and c.kind == "push"


@pytest_twisted.ensureDeferred
async def test_a_refused_push_is_recorded_with_its_peer_and_why(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    stranger = make_fleet(1, seed=7, first_serial=500).meters[0]
    assert not (await send_from("127.0.0.3", port, push_bytes(stranger))).check(ConnectionDone)
    assert rejected(sac, "unknown-meter") == 1
    # a known meter refused too: from an address it may not call from
    [m] = fleet.meters
    await store.meters.update(m.ldn, {"allowed_ips": ("192.0.2.1",)})
    assert not (await send_from("127.0.0.4", port, push_bytes(m))).check(ConnectionDone)
    [c] = await recorded(store, m.ldn)
    assert (c.peer, c.outcome) == ("127.0.0.4", "ip-not-allowed")
    assert c.detail is not None and "may not call from 127.0.0.4" in c.detail
    await sac.connections.flush()
    [(peer, outcome, detail)] = backend.raw(
        "SELECT peer, outcome, detail FROM connections WHERE meter_id IS NULL"
    )
    assert (peer, outcome) == ("127.0.0.3", "unknown-meter") and detail


@pytest_twisted.ensureDeferred
async def test_a_poll_leaves_its_record_with_what_it_could_not_read(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend, poll_interval=3600)
    await store.meters.add(NewMeter("SIM9999999999999", address="127.0.0.1:1"))  # nobody there
    [m] = fleet.meters
    m.missing = frozenset({EVENT_LOG})  # its firmware lacks the event logbook
    log = ConnectionLog(store, reactor=reactor, every=60)  # both written at the flush
    poller = Poller(
        store,
        REGISTRY,
        reactor=reactor,
        settings=PollSettings(connect_timeout=2),
        session=SETTINGS,
        connections=log,
    )
    try:
        results = {}
        for job in await store.meters.claim_polls(2, dt.timedelta(minutes=5)):
            results[job.ldn] = await poller.run(job)
    finally:
        await fleet.stop()
    await log.flush()
    [c] = await store.connections.recent(m.ldn)
    result = results[m.ldn]
    assert (c.kind, c.peer, c.outcome) == ("poll", f"127.0.0.1:{ports[0]}", "partial")
    assert c.skipped == result.skipped and c.skipped[0].startswith("event_logbook:")
    assert c.read == result.read and c.detail is None and c.duration_ms > 0
    [failed] = await store.connections.recent("SIM9999999999999")
    assert (failed.outcome, failed.peer) == ("failed", "127.0.0.1:1")
    assert failed.detail is not None and "cannot connect" in failed.detail
    assert log.transactions == 1  # both in one transaction


class _Refusing:
    """A store whose connections cannot be written (the database away)."""

    def __init__(self, store: Any) -> None:
        self.store, self.tries = store, 0
        self.connections = self

    async def add(self, rows: Any) -> int:
        self.tries += 1
        raise StorageError("the database is away")

    async def prune(self, older_than: dt.timedelta) -> int:
        raise StorageError("the database is away")


@pytest_twisted.ensureDeferred
async def test_records_the_store_refuses_are_lost_never_the_session(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    refusing = _Refusing(store)
    sac.factory.connections = sac.connections = ConnectionLog(
        refusing, reactor=reactor, every=0.01, metrics=sac.acquisition.metrics
    )
    [m] = fleet.meters
    assert (await push_once(port, m)).end_reason.check(ConnectionDone)  # stored, acknowledged
    for _ in range(100):
        if refusing.tries:
            break
        await deferLater(reactor, 0.02, lambda: None)
    await sac.connections.flush()
    assert sac.acquisition.metrics.value("sac_connections_lost_total") == 1
    assert await store.readings.count() > 0
    assert await ConnectionPruning(refusing, dt.timedelta(days=1), reactor=reactor).run() == 0


@pytest_twisted.ensureDeferred
async def test_the_log_writes_at_once_at_its_batch_and_holds_at_most_most(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    log = ConnectionLog(store, reactor=reactor, every=60, batch=3, most=5)
    row = Connection(None, dt.datetime.now(dt.UTC), "192.0.2.1", "push", "push-timeout", 5)
    for _ in range(3):  # the batch: written now, not in 60 s
        log.record(row)
    for _ in range(100):
        if backend.raw("SELECT count(*) FROM connections") == [(3,)]:
            break
        await deferLater(reactor, 0.02, lambda: None)
    assert backend.raw("SELECT count(*) FROM connections") == [(3,)]
    held = ConnectionLog(store, reactor=reactor, every=60, batch=100, most=5)
    for _ in range(7):
        held.record(row)
    assert held.metrics.value("sac_connections_lost_total") == 2  # 5 wait at most
    await held.flush()
    assert backend.raw("SELECT count(*) FROM connections") == [(8,)]
    await Deferred.fromCoroutine(store.close())


class _Hanging:
    """A store whose connections' writes never answer (the network to it cut)."""

    def __init__(self) -> None:
        self.connections = self

    def add(self, rows: Any) -> Deferred[int]:
        return Deferred()


@pytest_twisted.ensureDeferred
async def test_a_store_that_never_answers_holds_no_stop_up() -> None:
    log = ConnectionLog(_Hanging(), reactor=reactor, every=60)
    for _ in range(3):
        log.record(Connection(None, dt.datetime.now(dt.UTC), "192.0.2.1", "push", "stored", 5))
    began = reactor.seconds()
    await log.flush(within=0.2)
    assert reactor.seconds() - began < 5
    assert log.metrics.value("sac_connections_lost_total") == 3
