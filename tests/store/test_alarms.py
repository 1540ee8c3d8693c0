"""Alarms in the store, on every backend: events stored with their class, an alarm open until
an operator acknowledges it (audited), the open alarms paged and counted by category, and
the meter list's "with alarms" filter from real data."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import pytest_twisted

from sac.dlms import Obis
from sac.errors import AlreadyAcknowledged, BadCursor, Conflict, InvalidRequest, UnknownAlarm
from sac.store import Actor, Event, Ingest, MeterQuery, MeterStatus, UnknownMeter
from sac.store.events import OPEN
from sac.store.meterlist import ALARMED
from sac.store.schema import load_migrations
from tests.store.conftest import Backend
from tests.store.test_operations import T0, at, ldn, opened

LOGBOOK = Obis("7.0.99.98.1.255")
OTTO = Actor("otto", "192.0.2.7")


def event(meter: int, code: int, minute: int, **kw: object) -> Event:
    return Event(ldn(meter), LOGBOOK, code, at(9, minute), T0, "poll", **kw)  # type: ignore[arg-type]


async def alarmed(backend: Backend):
    """Three meters: 0 with a tamper (80) and a battery alarm (94), 1 with a valve alarm
    (102) and a billing close (info), 2 with none."""
    store = await opened(backend, meters=3)
    batch = Ingest(
        events=[
            event(0, 80, 1),
            event(0, 94, 2),
            event(1, 102, 3),
            event(1, 90, 4),
        ]
    )
    result = await store.readings.ingest(batch)
    assert result.events == 4
    assert dict(result.alarms) == {"tamper": 1, "battery": 1, "valve": 1}
    return store


@pytest_twisted.ensureDeferred
async def test_events_are_stored_with_their_class(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    own = event(0, 200, 1, severity="alarm", category="valve")  # the profile's own class
    result = await store.readings.ingest(Ingest(events=[own, event(0, 80, 2), event(0, 12, 3)]))
    assert dict(result.alarms) == {"valve": 1, "tamper": 1}
    stored = await store.events.latest(ldn(0))
    got = {e.code: (e.severity, e.category, e.open_alarm) for e in stored}
    assert got == {
        200: ("alarm", "valve", True),
        80: ("alarm", "tamper", True),
        12: ("info", "clock", False),
    }
    # the same events again (a logbook read twice, a frame replayed): no new alarm
    again = await store.readings.ingest(Ingest(events=[own, event(0, 80, 2)]))
    assert (again.events, dict(again.alarms)) == (0, {})
    assert (await store.meters.count(query=MeterQuery(alarms=True))) == 1


@pytest_twisted.ensureDeferred
async def test_open_alarms_paged_by_meter_and_category(backend: Backend) -> None:
    store = await alarmed(backend)
    page = await store.events.open_alarms()
    assert [e.code for e in page.alarms] == [102, 94, 80] and page.cursor is None  # newest first
    assert all(e.id is not None and e.open_alarm for e in page.alarms)
    assert [e.code for e in (await store.events.open_alarms(ldn=ldn(0))).alarms] == [94, 80]
    assert [e.code for e in (await store.events.open_alarms(category="valve")).alarms] == [102]
    seen, cursor = [], None
    for _ in range(5):
        part = await store.events.open_alarms(cursor=cursor, limit=1)
        seen += [e.code for e in part.alarms]
        cursor = part.cursor
        if cursor is None:
            break
    assert seen == [102, 94, 80]
    counts = await store.events.alarm_counts()
    assert [(c.category, c.alarms, c.meters) for c in counts] == [
        ("battery", 1, 1),
        ("tamper", 1, 1),
        ("valve", 1, 1),
    ]
    with pytest.raises(UnknownMeter):
        await store.events.open_alarms(ldn=ldn(9))
    with pytest.raises(InvalidRequest, match="category"):
        await store.events.open_alarms(category="weather")
    with pytest.raises(BadCursor):
        await store.events.open_alarms(cursor="not a cursor")
    with pytest.raises(InvalidRequest, match="1 to 1000"):
        await store.events.open_alarms(limit=0)


@pytest_twisted.ensureDeferred
async def test_acknowledge_one_audited_twice_refused(backend: Backend) -> None:
    store = await alarmed(backend)
    tamper = next(e for e in (await store.events.open_alarms()).alarms if e.code == 80)
    assert tamper.id is not None
    done = await store.events.acknowledge(tamper.id, OTTO, "  technician sent  ")
    ack = done.acknowledgement
    assert ack is not None and (ack.by, ack.note) == ("otto", "technician sent")
    assert not done.open_alarm and done.code == 80 and done.ldn == ldn(0)
    assert [e.code for e in (await store.events.open_alarms()).alarms] == [102, 94]
    with pytest.raises(AlreadyAcknowledged, match="acknowledged by otto") as twice:
        await store.events.acknowledge(tamper.id, Actor("ada"))
    assert isinstance(twice.value, Conflict)
    info = next(e for e in await store.events.latest(ldn(1)) if e.code == 90)
    for unknown in (info.id, 999_999, 2**63):  # an info event is no alarm
        with pytest.raises(UnknownAlarm):
            await store.events.acknowledge(unknown, OTTO)
    with pytest.raises(InvalidRequest, match="note"):
        await store.events.acknowledge(102, OTTO, "x" * 1001)
    trail = await store.audit.log()
    lines = [(a.actor, a.action, a.target, a.detail) for a in trail]
    assert lines == [("otto", "acknowledge alarm", ldn(0), f"alarm {tamper.id}: technician sent")]
    assert trail[0].address == "192.0.2.7"
    # the meter page's view: who, when, what they noted
    shown = next(e for e in await store.events.latest(ldn(0)) if e.code == 80)
    assert shown.acknowledgement == ack


@pytest_twisted.ensureDeferred
async def test_acknowledge_every_alarm_of_a_meter(backend: Backend) -> None:
    store = await alarmed(backend)
    assert await store.events.acknowledge_meter(ldn(0), OTTO, "replaced") == 2
    assert await store.events.acknowledge_meter(ldn(0), OTTO) == 0
    assert [e.ldn for e in (await store.events.open_alarms()).alarms] == [ldn(1)]
    with pytest.raises(UnknownMeter):
        await store.events.acknowledge_meter(ldn(9), OTTO)
    trail = await store.audit.log()
    assert [(a.action, a.target, a.detail) for a in trail][-1] == (
        "acknowledge alarms",
        ldn(0),
        "every open alarm: replaced",
    )


@pytest_twisted.ensureDeferred
async def test_with_alarms_is_an_open_alarm_or_a_diagnostic(backend: Backend) -> None:
    store = await alarmed(backend)
    assert await store.events.open_counts([ldn(0), ldn(1), ldn(2)]) == {ldn(0): 2, ldn(1): 1}
    assert await store.events.open_counts([]) == {}
    # meter 2: no alarm event, but its diagnostic says something is wrong
    await store.readings.ingest(Ingest(statuses=[MeterStatus(ldn(2), connected=T0, diagnostic=4)]))
    for sort in ("ldn", "diagnostic", "last_connection"):
        for descending in (False, True):
            query = MeterQuery(alarms=True, sort=sort, descending=descending)
            page = await store.meters.page(limit=1000, query=query)
            assert sorted(m.ldn for m in page.meters) == [ldn(0), ldn(1), ldn(2)], sort
            assert page.total == 3
    # acknowledged: meter 0 leaves the list, meter 1 keeps its valve alarm
    await store.events.acknowledge_meter(ldn(0), OTTO)
    assert await store.events.open_counts([ldn(0), ldn(1)]) == {ldn(1): 1}
    page = await store.meters.page(limit=1000, query=MeterQuery(alarms=True))
    assert [m.ldn for m in page.meters] == [ldn(1), ldn(2)]
    valve = (await store.events.open_alarms(ldn=ldn(1))).alarms[0]
    assert valve.id is not None
    await store.events.acknowledge(valve.id, OTTO)
    await store.readings.ingest(
        Ingest(statuses=[MeterStatus(ldn(2), connected=T0 + dt.timedelta(hours=1), diagnostic=0)])
    )
    assert await store.meters.count(query=MeterQuery(alarms=True)) == 0
    # a new alarm after the acknowledgement opens again
    await store.readings.ingest(Ingest(events=[event(1, 102, 30)]))
    assert await store.meters.count(query=MeterQuery(alarms=True)) == 1


@pytest_twisted.ensureDeferred
async def test_events_before_the_migration_are_classed_on_read(backend: Backend) -> None:
    version = len(load_migrations(backend.kind))
    old = backend.make()
    assert await old.open(upto=9) == (0, 9)  # the schema before 0010_alarms
    backend.raw(
        "INSERT INTO meters (ldn, profile, state, created, updated, allowed_ips) VALUES"
        f" ('{ldn(0)}', 'uni-ts-11291-12-2', 'active', '{T0.isoformat()}',"
        f" '{T0.isoformat()}', '')"
    )
    backend.raw(
        "INSERT INTO events (meter_id, logbook, code, occurred, received, source)"
        f" SELECT id, '{LOGBOOK}', 80, '{T0.isoformat()}', '{T0.isoformat()}', 'poll'"
        " FROM meters"
    )
    await old.close()
    store = backend.make()
    assert (await store.open())[1] == version
    (old_event,) = await store.events.latest(ldn(0))
    assert (old_event.severity, old_event.category) == (None, None)  # not tracked as an alarm
    assert not old_event.open_alarm
    assert (await store.events.open_alarms()).alarms == ()
    assert await store.meters.count(query=MeterQuery(alarms=True)) == 0
    new = dataclasses.replace(old_event, occurred=T0 + dt.timedelta(minutes=1), id=None)
    assert dict((await store.readings.ingest(Ingest(events=[new]))).alarms) == {"tamper": 1}


@pytest_twisted.ensureDeferred
async def test_with_alarms_reads_its_partial_index(backend: Backend) -> None:
    """The filter is written as the index's predicate: SQLite's planner, which matches the
    terms, takes the index (a filter that drifted from it would scan every meter)."""
    await opened(backend)
    if backend.kind == "sqlite":
        found = {name for (name,) in backend.raw("SELECT name FROM sqlite_master")}
        plans = [
            " ".join(row[-1] for row in backend.raw(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in (
                f"SELECT count(*) FROM meters WHERE {ALARMED}",
                f"SELECT ldn FROM meters WHERE {ALARMED} ORDER BY ldn LIMIT 51",
                f"SELECT e.id FROM events e WHERE {OPEN} ORDER BY e.occurred DESC, e.id DESC",
            )
        ]
        assert all("USING" in plan and "INDEX" in plan for plan in plans), plans
        assert "meters_alarmed_ldn" in plans[0] and "events_open_alarms" in plans[2]
    else:
        found = {name for (name,) in backend.raw("SELECT indexname FROM pg_indexes")}
    assert {
        "meters_alarmed_ldn",
        "events_open_alarms",
        "events_open_by_meter",
        "events_open_by_category",
    } <= found
