"""What acquisition needs of the store, on every backend: a frame's content stored with its
invocation counter or not at all, command priorities and history, meters found by address."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import pytest_twisted

from sac.dlms import Obis
from sac.errors import ReplayError
from sac.store import CommandState, Ingest, MeterStatus, NewMeter, PeerCounter, Reading
from sac.store.readings import ingest
from sac.store.sql import InsertRows, Query, UpdateRows
from tests.store.conftest import Backend
from tests.store.test_operations import ALICE, FAST, T0, Clock, at, index, ldn


async def _opened(backend: Backend, meters: int, **kw: object):
    store = backend.make(password_params=FAST, **kw)
    await store.open()
    for i in range(meters):
        await store.meters.add(
            NewMeter(ldn(i), allowed_ips=("192.0.2.1", f"198.51.100.{i}") if i < 2 else ())
        )
    return store


@pytest_twisted.ensureDeferred
async def test_an_ingest_with_a_stale_counter_stores_nothing(backend: Backend) -> None:
    store = await _opened(backend, 1)
    first = Ingest(
        readings=[index(ldn(0), 10, at(10))],
        statuses=[MeterStatus(ldn(0), connected=T0)],
        counters=[PeerCounter(ldn(0), 1, 500)],
    )
    assert (await store.readings.ingest(first)).readings == 1
    replay = Ingest(
        readings=[index(ldn(0), 11, at(11))],
        statuses=[MeterStatus(ldn(0), connected=T0, index=index(ldn(0), 11, at(11)))],
        counters=[PeerCounter(ldn(0), 1, 500)],
    )
    with pytest.raises(ReplayError, match="500 is not newer than 500"):
        await store.readings.ingest(replay)
    assert await store.readings.count() == 1
    meter = await store.meters.get(ldn(0))
    assert meter is not None and meter.index_value is None  # the status was rolled back too
    assert await store.counters.last(ldn(0), 1) == (0, 500)
    newer = Ingest(readings=[index(ldn(0), 11, at(11))], counters=[PeerCounter(ldn(0), 1, 501)])
    assert (await store.readings.ingest(newer)).readings == 1
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_batch_of_pushes_is_stored_with_all_its_counters_or_not_at_all(
    backend: Backend,
) -> None:
    """One ingest carrying many meters' pushes (the acquisition's group commit): counters and
    list values are written for all at once; one stale counter anywhere stores nothing."""
    store = await _opened(backend, 4)
    await store.readings.ingest(Ingest(counters=[PeerCounter(ldn(2), 1, 900)]))

    def push(i: int, counter: int, hour: int, **status: object) -> Ingest:
        reading = index(ldn(i), 100 * i + hour, at(hour))
        return Ingest(
            readings=[reading],
            statuses=[MeterStatus(ldn(i), connected=at(hour), index=reading, **status)],
            counters=[PeerCounter(ldn(i), 1, counter)],
        )

    def merged(*pushes: Ingest) -> Ingest:
        return Ingest(
            readings=[r for b in pushes for r in b.readings],
            statuses=[s for b in pushes for s in b.statuses],
            counters=[c for b in pushes for c in b.counters],
        )

    stale = merged(push(0, 5, 10), push(1, 7, 10), push(2, 900, 10), push(3, 1, 10))
    with pytest.raises(ReplayError, match="900 is not newer than 900"):
        await store.readings.ingest(stale)
    assert await store.readings.count() == 0
    assert [await store.counters.last(ldn(i), 1) for i in range(4)] == [
        (0, None),
        (0, None),
        (0, 900),
        (0, None),
    ]

    ok = merged(push(0, 5, 10, diagnostic=4), push(1, 7, 11, valve_state=0), push(2, 901, 12))
    result = await store.readings.ingest(ok)
    assert (result.readings, result.pending) == (3, frozenset())
    meters = [await store.meters.get(ldn(i)) for i in range(4)]
    assert [(m.index_value, m.last_connection) for m in meters] == [
        (10, at(10)),
        (111, at(11)),
        (212, at(12)),
        (None, None),
    ]
    assert (meters[0].diagnostic, meters[0].valve_state) == (4, None)
    assert (meters[1].diagnostic, meters[1].valve_state) == (None, 0)

    # an older push of meter 0 (a spool replay) with a newer counter: stored as history, but
    # the list keeps the newer values; meter 1 twice in one batch: both counters taken in order
    await store.commands.queue(ldn(1), "read", {}, ALICE)
    late = merged(push(0, 6, 9, diagnostic=8), push(1, 8, 12), push(1, 9, 13))
    result = await store.readings.ingest(late)
    assert (result.readings, result.pending) == (3, frozenset({ldn(1)}))
    meters = [await store.meters.get(ldn(i)) for i in range(2)]
    assert (meters[0].index_value, meters[0].diagnostic, meters[0].last_connection) == (
        10,
        4,
        at(10),
    )
    assert (meters[1].index_value, meters[1].last_connection) == (113, at(13))
    assert await store.counters.last(ldn(1), 1) == (0, 9)
    twice = merged(push(1, 10, 14), push(1, 10, 15))
    with pytest.raises(ReplayError, match="10 is not newer than 10"):
        await store.readings.ingest(twice)
    assert await store.counters.last(ldn(1), 1) == (0, 9)
    await store.close()


@pytest_twisted.ensureDeferred
async def test_commands_run_by_priority_and_keep_every_transition(backend: Backend) -> None:
    clock = Clock()
    store = await _opened(backend, 1, clock=clock)
    read = await store.commands.queue(ldn(0), "read", {}, ALICE)
    close = await store.commands.queue(ldn(0), "valve-close", {}, ALICE, priority=10)
    later = await store.commands.queue(ldn(0), "read", {}, ALICE)
    clock.advance(minutes=1)
    claimed = await store.commands.claim(ldn(0), by="sac-1")
    assert [c.id for c in claimed] == [close.id, read.id, later.id]
    assert claimed[0].priority == 10
    clock.advance(seconds=3)
    await store.commands.retry(close.id, "connection lost")
    clock.advance(minutes=1)
    await store.commands.claim(ldn(0), by="sac-2")
    clock.advance(seconds=2)
    await store.commands.finish(close.id, True, "control_state=0")
    history = await store.commands.history(close.id)
    assert [(h.state, h.detail) for h in history] == [
        (CommandState.PENDING, "queued by alice"),
        (CommandState.SENT, "claimed by sac-1"),
        (CommandState.PENDING, "connection lost"),
        (CommandState.SENT, "claimed by sac-2"),
        (CommandState.DONE, "control_state=0"),
    ]
    assert [h.at for h in history] == sorted(h.at for h in history)
    assert history[-1].at == clock.now
    await store.close()


@pytest_twisted.ensureDeferred
async def test_meters_are_found_by_an_exact_allowed_address(backend: Backend) -> None:
    store = await _opened(backend, 3)
    assert [m.ldn for m in await store.meters.by_ip("198.51.100.1")] == [ldn(1)]
    assert sorted(m.ldn for m in await store.meters.by_ip("192.0.2.1")) == [ldn(0), ldn(1)]
    assert await store.meters.by_ip("198.51.100.") == []  # no prefix match
    assert await store.meters.by_ip("98.51.100.1") == []  # no suffix match
    assert await store.meters.by_ip("%") == []
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_push_of_a_meter_disabled_meanwhile_reports_no_commands(backend: Backend) -> None:
    """The push path checks the meter's state before it stores the push; a disabling that
    commits in between must not let the session run the meter's commands: the push's
    transaction reports commands of active meters only."""
    from sac.store import MeterState

    store = await _opened(backend, 1)
    await store.commands.queue(ldn(0), "valve-close", {}, ALICE)
    await store.meters.set_state(ldn(0), MeterState.DISABLED)
    result = await store.readings.ingest(Ingest(counters=[PeerCounter(ldn(0), 1, 5)]))
    assert result.pending == frozenset()
    await store.meters.set_state(ldn(0), MeterState.ACTIVE)
    result = await store.readings.ingest(Ingest(counters=[PeerCounter(ldn(0), 1, 6)]))
    assert result.pending == frozenset({ldn(0)})


@pytest_twisted.ensureDeferred
async def test_push_candidates_are_allowlisted_meters_then_those_last_heard_there(
    backend: Backend,
) -> None:
    store = backend.make(password_params=FAST)
    await store.open()
    for i in range(4):
        allowed = ("192.0.2.1",) if i < 2 else ()
        await store.meters.add(
            NewMeter(ldn(i), system_title=bytes([0x10, i, 0, 0, 0, 0, 0, 1]), allowed_ips=allowed)
        )
    for i, address in ((2, "192.0.2.1"), (3, "192.0.2.9")):  # heard from these addresses
        status = MeterStatus(ldn(i), connected=at(i), address=address)
        await store.readings.ingest(Ingest(statuses=[status]))
    found = await store.meters.push_candidates("192.0.2.1", 8)
    assert [m.ldn for m in found] == [ldn(0), ldn(1), ldn(2)]
    assert [m.ldn for m in await store.meters.push_candidates("192.0.2.1", 2)] == [ldn(0), ldn(1)]
    assert [m.ldn for m in await store.meters.push_candidates("192.0.2.9", 8)] == [ldn(3)]
    assert await store.meters.push_candidates("192.0.2.77", 8) == []
    # an older connection does not move the address back
    await store.readings.ingest(
        Ingest(statuses=[MeterStatus(ldn(3), connected=at(0), address="x")])
    )
    assert [m.ldn for m in await store.meters.push_candidates("192.0.2.9", 8)] == [ldn(3)]


def test_an_ingest_outlives_a_change_of_its_meter_told_meanwhile() -> None:
    """A change of a meter told while an ingest of it is in flight (another process's
    NOTIFY, on PostgreSQL) withdraws the meter's id from the cache, not from under the
    transaction: it goes on with the id it started with (seen as a KeyError in the
    two-process test, which refused the push)."""
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    ids = {"SIM0000000000001": 1}
    batch = Ingest(
        readings=[Reading("SIM0000000000001", Obis("7.0.13.2.0.255"), 2, 5, now, "cf47", now)],
        statuses=[MeterStatus("SIM0000000000001", connected=now, at=now)],
        counters=[PeerCounter("SIM0000000000001", 1, 7)],
    )
    run = ingest(batch, ids)
    op = next(run)  # the counters first: the id was known, nothing looked up
    ids.clear()  # the change told meanwhile
    while True:
        if isinstance(op, InsertRows):
            answer: Any = [(1, 1)] if op.returning else len(op.rows)
        elif isinstance(op, UpdateRows):
            answer = len(op.rows)
        else:
            assert isinstance(op, Query)
            answer = []
        try:
            op = run.send(answer)
        except StopIteration as done:
            assert done.value.readings == 1
            return
