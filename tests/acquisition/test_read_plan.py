"""The read plan in push sessions and polls, against simulated meters over TCP: the battery
there after a pushed meter's first session, a logbook read once and never twice, a budget
spent midway resumed by the next session, an item the meter refuses marked (not tried in
every session)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone

from sac.dlms import Obis
from sac.dlms.cosem import DataAccessResult
from sac.profiles import STANDARD_OBJECTS, ValveAction
from sac.profiles.readplan import UNI_TS_PLAN
from sac.protocols.client import dial
from sac.services.plan import due_now, run_plan
from sac.services.session import MeterSession, SessionSettings
from sac.store import Actor
from tests.acquisition.conftest import Backend, Sac, push_once, started
from tests.acquisition.test_poll import _listening
from tests.acquisition.test_slow import until

BATTERY = STANDARD_OBJECTS["battery_autonomy"].obis
OPERATOR = Actor("olivia", "192.0.2.9")
EVENT_LOG = STANDARD_OBJECTS["event_logbook"].obis
PLANNED = [item.quantity for item in UNI_TS_PLAN]


def record_reads(meter: Any) -> list[tuple[Obis, int, Any]]:
    """What the SAC asks ``meter`` (its GETs: object, attribute, selective access), and the
    number of rows each profile read gets back (the real meter answers)."""
    asked: list[tuple[Obis, int, Any]] = []

    class Recording(type(meter)):  # the meter's own class, its answers unchanged
        __slots__ = ()

        def get(self, client_sap: int, attribute: Any, access: Any = None) -> Any:
            answer = super().get(client_sap, attribute, access)
            asked.append((attribute.instance, attribute.attribute, access, answer))
            return answer

    meter.__class__ = Recording
    return asked


@pytest_twisted.ensureDeferred
async def test_a_pushed_meter_has_its_battery_after_its_first_session(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs, read_plan=True)
    [m] = fleet.meters
    assert (await store.meters.get(m.ldn)).battery_value is None
    protocol = await push_once(port, m)
    assert protocol.end_reason.check(ConnectionDone)  # the push acknowledged after the plan
    meter = await store.meters.get(m.ldn)
    assert meter.battery_value == m.battery and meter.battery_unit == 4  # days
    assert meter.diagnostic == m.current_diagnostic
    [battery] = await store.readings.last(m.ldn, BATTERY)
    assert battery.value == m.battery and battery.source == "session"
    marks = {mark.quantity: mark for mark in await store.readings.plan_marks(m.ldn)}
    assert set(marks) == set(PLANNED)
    assert marks["event_logbook"].counter == m.event_counter  # as the frame carried it
    # the same day, nothing moved: the next push is acknowledged at once, no association
    counters = await store.counters.last(m.ldn, 1)
    protocol = await push_once(port, m)
    assert protocol.end_reason.check(ConnectionDone)
    assert (await store.counters.last(m.ldn, 1))[0] == counters[0]  # none of ours used
    await until(
        lambda: sac.acquisition.metrics.value("sac_push_sessions_total", outcome="stored") >= 1,
        "the second session ended as stored",
    )
    assert sac.acquisition.metrics.value("sac_push_sessions_total", outcome="read") == 1


@pytest_twisted.ensureDeferred
async def test_a_logbook_is_read_once_never_twice(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, _sac, port = await started(backend, sacs, read_plan=True)
    [m] = fleet.meters
    m.operate_valve(ValveAction.CLOSE)  # logged (metrological logbook)
    m.param_event(m.now(), 168)  # and a PDR change (event and parameter logbooks)
    asked = record_reads(m)
    await push_once(port, m)
    first = [a for a in asked if a[0] == EVENT_LOG and a[1] == 2]
    assert len(first) == 1 and len(first[0][3]) == 1  # the one entry the logbook holds
    held = await store.events.latest(m.ldn)
    assert {e.code for e in held} >= {168, 30}
    # a new event: the frame's event counter moves, the logbook is due again at once...
    m.param_event(m.now() + 1, 168)
    asked.clear()
    await push_once(port, m)
    second = [a for a in asked if a[0] == EVENT_LOG and a[1] == 2]
    assert len(second) == 1 and len(second[0][3]) == 1  # ...and only the new entry comes
    assert not [a for a in asked if a[0] == BATTERY]  # the battery is not due again today
    codes = [e.code for e in await store.events.latest(m.ldn) if e.logbook == EVENT_LOG]
    assert codes.count(168) == 2


class Ticking:
    """A clock that moves 0.6 s each time it is read: every item seems to take time."""

    def __init__(self) -> None:
        self.t = 0.0

    def seconds(self) -> float:
        self.t += 0.6
        return self.t


async def management_session(store: Any, m: Any, port: int) -> tuple[MeterSession, Any]:
    protocol = await dial(reactor, "127.0.0.1", port, connect_timeout=5, response_timeout=5)
    meter = await store.meters.get(m.ldn)
    session = MeterSession(
        protocol.link,
        store,
        m.profile,
        settings=SessionSettings(name="plan-test"),
        now=lambda: dt.datetime.now(dt.UTC),
        source="session",
        meter=meter,
    )
    _ldn, fc = await session.identify()
    await session.open_management(fc)
    return session, protocol


@pytest_twisted.ensureDeferred
async def test_a_budget_spent_midway_is_resumed_by_the_next_session(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    try:
        session, protocol = await management_session(store, m, ports[0])
        due = due_now(m.profile, (), session.now())
        # deadline 3 s on a clock that moves 0.6 s a reading: room for one item only
        batch = await run_plan(session, due, (), 3.0, Ticking())
        assert session.read == ["battery_autonomy"]
        assert session.skipped == [
            f"{', '.join(PLANNED[1:])}: left for the next session (the budget)"
        ]
        await store.readings.ingest(batch)
        await session.close()
        protocol.transport.loseConnection()
        marks = await store.readings.plan_marks(m.ldn)
        assert [mark.quantity for mark in marks] == ["battery_autonomy"]
        # the next session: the battery is not due, the rest is read
        session, protocol = await management_session(store, m, ports[0])
        due = due_now(m.profile, marks, session.now())
        assert [item.quantity for item in due] == PLANNED[1:]
        batch = await run_plan(session, due, marks, reactor.seconds() + 60, reactor)
        assert session.read == PLANNED[1:] and session.skipped == []
        await store.readings.ingest(batch)
        await session.close()
        protocol.transport.loseConnection()
        assert {mark.quantity for mark in await store.readings.plan_marks(m.ldn)} == set(PLANNED)
    finally:
        await fleet.stop()


@pytest_twisted.ensureDeferred
async def test_an_item_the_meter_refuses_is_marked_with_why(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    try:
        session, protocol = await management_session(store, m, ports[0])
        lacking = STANDARD_OBJECTS["parameter_logbook"].obis

        class WithoutTheLogbook(type(m)):  # this meter has no parameter logbook
            __slots__ = ()

            def get(self, client_sap: int, attribute: Any, access: Any = None) -> Any:
                if attribute.instance == lacking:
                    return DataAccessResult.OBJECT_UNDEFINED
                return super().get(client_sap, attribute, access)

        m.__class__ = WithoutTheLogbook
        due = due_now(m.profile, (), session.now())
        batch = await run_plan(session, due, (), reactor.seconds() + 60, reactor)
        [refused] = session.skipped
        assert refused.startswith("parameter_logbook: ")
        assert "parameter_logbook" not in session.read and session.broken is None
        await store.readings.ingest(batch)
        await session.close()
        protocol.transport.loseConnection()
        marks = await store.readings.plan_marks(m.ldn)
        assert "parameter_logbook" in {mark.quantity for mark in marks}  # tried again in a week
    finally:
        await fleet.stop()


@pytest_twisted.ensureDeferred
async def test_what_a_command_logs_is_read_in_its_session(
    backend: Backend, sacs: list[Sac]
) -> None:
    """CF47 carries no event counter: after a command the session reads the counters, and
    the logbook the valve operation moved is read at once, not tomorrow."""
    store, fleet, _sac, port = await started(backend, sacs, read_plan=True)
    [m] = fleet.meters
    await push_once(port, m)  # the plan read: nothing due for a day
    assert not [e for e in await store.events.latest(m.ldn) if e.code == 30]
    await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    await push_once(port, m)
    [closed] = [e for e in await store.events.latest(m.ldn) if e.code == 30]
    assert closed.logbook == STANDARD_OBJECTS["metrological_logbook"].obis
    assert closed.source == "session"
