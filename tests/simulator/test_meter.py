"""The simulated meter's object set and its life over (simulated) time, without a network."""

from __future__ import annotations

import datetime as dt
import random

from twisted.internet.task import Clock as Reactor

from sac.dlms import Obis
from sac.dlms.axdr import DoubleLongUnsigned, Integer, OctetString, VisibleString
from sac.dlms.cosem import ActionResult, DataAccessResult
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.xdlms import AttributeDescriptor, MethodDescriptor, entry_descriptor, range_descriptor
from sac.profiles import ValveAction, discover_profiles, uni_ts_system_title, valve_steps
from sac.simulator.fleet import Fleet, SimClock
from sac.simulator.life import (
    EV_BATTERY_LOW,
    EV_BILLING_CLOSED,
    EV_OPENING_END,
    EV_READY_COMMAND,
    EV_VALVE_CLOSED,
    EV_VALVE_FAILED,
    EV_VALVE_OPENED,
    ValveState,
)
from sac.simulator.meter import SimulatedMeter

REGISTRY = discover_profiles().registry
START = dt.datetime(2026, 1, 10, 5, 0, tzinfo=dt.UTC).timestamp()  # a gas day starts


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t

    def hours(self, n: float) -> None:
        self.t += n * 3600


def make(profile: str = "uni-ts-11291-12-2", seed: int = 3) -> tuple[SimulatedMeter, Clock]:
    clock = Clock()
    m = SimulatedMeter(
        ldn="SIM0000000000001",
        system_title=uni_ts_system_title("SIM", 1),
        key=bytes(16),
        profile=REGISTRY[profile],
        clock=clock,
        rng=random.Random(seed),
    )
    return m, clock


def get(m: SimulatedMeter, class_id: int, ln: str, a: int = 2, sap: int = 1, access=None):
    return m.get(sap, AttributeDescriptor(class_id, Obis(ln), a), access)


def valve(m: SimulatedMeter, method: int, sap: int = 1) -> ActionResult:
    return m.action(sap, MethodDescriptor(70, Obis("0.0.96.3.10.255"), method), Integer(0))[0]


def test_gas_follows_a_daily_curve_and_stops_with_the_valve() -> None:
    m, clock = make()
    used = []
    for _ in range(24):
        before = m.index_litres
        clock.hours(1)
        m.advance()
        used.append(m.index_litres - before)
    # local time is UTC+1 in January: hour 0 of the list is 06:00-07:00 Italian time
    night, evening = used[21], used[13]  # 03:00 and 19:00 in Italy
    assert evening > 3 * night > 0
    assert 2000 < sum(used) < 9000  # litres on a January day, around 3 m3 x the season
    assert len(m.daily) == 1 and m.daily[0][2] == m.index_litres  # the gas day closed
    valve(m, 1)
    frozen = m.index_litres
    clock.hours(48)
    m.advance()
    assert m.index_litres == frozen and len(m.daily) == 3
    assert get(m, 3, "7.0.13.2.0.255") == DoubleLongUnsigned(frozen)


def test_each_gas_month_closes_a_billing_period_in_the_event_log() -> None:
    m, clock = make()  # 10 January
    clock.hours(24 * 22 + 1)  # past the gas month's start on 1 February, 06:00 Italian time
    m.advance()
    billing = [entry for entry in m.events if entry[2] == EV_BILLING_CLOSED]
    assert len(billing) == 1
    assert billing[0][0] == dt.datetime(2026, 2, 1, 5, tzinfo=dt.UTC).timestamp()


def test_the_valve_state_machine_and_its_logbook() -> None:
    m, clock = make(seed=1)
    assert valve(m, 2) == ActionResult.TEMPORARY_FAILURE  # enable opening of an open valve
    assert valve(m, 1) == ActionResult.SUCCESS
    assert m.valve_state == ValveState.DISCONNECTED
    assert valve(m, 2) == ActionResult.SUCCESS
    assert m.valve_state == ValveState.READY and get(m, 70, "0.0.96.3.10.255") is False
    assert m.open_at is not None  # with seed 1 the customer comes
    clock.t = m.open_at + 1
    m.advance()
    assert m.valve_state == ValveState.CONNECTED and get(m, 70, "0.0.96.3.10.255") is True
    codes = [e[1] for e in m.metro_events]
    assert codes == [EV_VALVE_FAILED, EV_VALVE_CLOSED, EV_READY_COMMAND, 111, EV_VALVE_OPENED]
    # an enable nobody acts on ends after a day
    valve(m, 1)
    valve(m, 2)
    m.open_at = None
    clock.hours(25)
    m.advance()
    assert m.valve_state == ValveState.DISCONNECTED
    assert m.metro_events[-1][1] == EV_OPENING_END
    # the logbook over the wire: by entry (the last two, first two columns)
    last_two = get(
        m, 7, "7.0.99.98.1.255", access=entry_descriptor(len(m.metro_events) - 1, 0, 1, 2)
    )
    assert [int(r[1]) for r in last_two] == [111, EV_OPENING_END] and len(last_two[0]) == 2


def test_the_schedule_scripts_drive_the_honeywell_valve() -> None:
    m, clock = make("honeywell-ei7")
    assert valve(m, 1) == ActionResult.OBJECT_UNAVAILABLE  # this model has no IC 70 methods
    at = dt.datetime.fromtimestamp(clock.t + 2 * 3600, dt.timezone(dt.timedelta(hours=1)))
    for step in valve_steps(m.profile, ValveAction.CLOSE, at.replace(tzinfo=None)):
        assert m.set(
            1, AttributeDescriptor(22, step.target.obis, step.target.attribute), step.value
        ) == (DataAccessResult.SUCCESS)
    assert m.valve_state == ValveState.CONNECTED  # not yet: it runs at 'at'
    clock.hours(2.5)
    m.advance()
    assert m.valve_state == ValveState.DISCONNECTED
    # at once when no time is given
    for step in valve_steps(m.profile, ValveAction.ENABLE_OPENING):
        m.set(1, AttributeDescriptor(22, step.target.obis, step.target.attribute), step.value)
    assert m.valve_state == ValveState.READY
    assert get(m, 3, "0.0.96.6.6.255", a=3)[1] == 56  # battery in percent


def test_access_rights_of_the_public_client() -> None:
    m, _ = make()
    assert get(m, 1, "0.0.42.0.0.255", sap=16) == OctetString(b"SIM0000000000001")
    assert get(m, 1, "0.0.43.1.1.255", sap=16) == DoubleLongUnsigned(0)
    assert get(m, 3, "7.0.13.2.0.255", sap=16) == DataAccessResult.READ_WRITE_DENIED
    assert get(m, 1, "0.0.96.1.10.255", sap=3) == DataAccessResult.READ_WRITE_DENIED
    assert valve(m, 1, sap=16) == ActionResult.READ_WRITE_DENIED
    pdr = AttributeDescriptor(1, Obis("0.0.96.1.10.255"), 2)
    assert m.set(16, pdr, VisibleString("01234567890123")) == DataAccessResult.READ_WRITE_DENIED
    assert m.set(1, pdr, VisibleString("01234567890123")) == DataAccessResult.SUCCESS
    assert m.set(1, pdr, VisibleString("0123456789012345")) == DataAccessResult.TYPE_UNMATCHED
    assert get(m, 1, "0.0.96.1.10.255") == VisibleString("01234567890123")
    assert get(m, 1, "1.2.3.4.5.6") == DataAccessResult.OBJECT_UNDEFINED
    assert get(m, 1, "0.0.42.0.0.255", a=1) == OctetString(bytes(Obis("0.0.42.0.0.255")))


def test_the_daily_profile_by_range_on_the_clock_or_the_unix_time() -> None:
    m, clock = make()
    clock.hours(24 * 10)
    m.advance()
    assert len(m.daily) == 10
    buffer = get(m, 7, "7.0.99.99.3.255")
    assert [int(r[0]) for r in buffer] == [e[0] for e in m.daily]
    t3, t6 = m.daily[3][0], m.daily[6][0]
    by_unix = range_descriptor(
        (1, "0.0.1.1.0.255", 2, 0), DoubleLongUnsigned(t3), DoubleLongUnsigned(t6)
    )
    assert [int(r[0]) for r in get(m, 7, "7.0.99.99.3.255", access=by_unix)] == [
        e[0] for e in list(m.daily)[3:7]
    ]

    def stamp(t: int) -> OctetString:
        when = dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(hours=1)))
        return OctetString(CosemDateTime.from_datetime(when, inverted_deviation=True).to_bytes())

    by_clock = range_descriptor((8, "0.0.1.0.0.255", 2, 0), stamp(t3), stamp(t6))
    assert get(m, 7, "7.0.99.99.3.255", access=by_clock) == get(
        m, 7, "7.0.99.99.3.255", access=by_unix
    )
    assert get(m, 7, "7.0.99.99.3.255", a=3)[2][1] == OctetString(bytes(Obis("7.0.13.2.0.255")))
    # the battery lost ten days of autonomy
    assert int(get(m, 3, "0.0.96.6.6.255")) == 3640


def test_a_catching_up_clock_runs_fast_to_the_wall_clock_then_follows_it() -> None:
    """The demo's clock (issue 19): a day back at 60x reaches now after 24.4 minutes; from
    then on it is the wall clock, never ahead of it (the demo once pushed readings dated
    hours in the future)."""
    reactor = Reactor()
    wall0 = 1_800_000_000.0
    clock = SimClock(reactor, 60, start=wall0 - 86400, catch_up=True, wall=lambda: wall0)
    assert clock() == wall0 - 86400 and not clock.caught_up
    reactor.advance(600)  # 10 minutes: 10 hours simulated
    assert clock() == wall0 - 86400 + 36000
    reactor.advance(86400 / 59 - 600)  # the simulated day meets the wall clock
    assert clock() == wall0 + 86400 / 59 and clock.caught_up
    reactor.advance(3600)
    assert clock() == wall0 + 86400 / 59 + 3600  # the wall clock's pace
    assert clock.real_delay(900) == 15  # pushes keep their real pace
    plain = SimClock(reactor, 60, start=wall0, wall=lambda: wall0)
    reactor.advance(60)
    assert plain() == wall0 + 3600 and not plain.caught_up  # the simulator's own: unbounded


def test_a_push_the_simulator_cannot_build_is_logged_and_flagged() -> None:
    from twisted.internet.testing import StringTransport
    from twisted.logger import globalLogPublisher

    from sac.simulator.session import MeterProtocol

    m, _clock = make()
    protocol = MeterProtocol(m, push_template=99, reactor=Reactor())  # no layout 99
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        protocol.makeConnection(StringTransport())
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert protocol.failed and protocol.transport.disconnecting
    [event] = [e for e in logged if "log_failure" in e]
    assert event["what"] == "cannot build its push (template 99)"
    assert event["log_failure"].check(KeyError)


def test_a_vendor_field_takes_the_value_of_its_object() -> None:
    from sac.dlms.compact import CompactLayout, decode_compact, fld
    from sac.profiles import STANDARD_OBJECTS, MeterProfile

    battery = STANDARD_OBJECTS["battery_autonomy"].obis
    layout = CompactLayout(200, "vendor", (fld("battery_hours", "u16", battery),))
    profile = MeterProfile(name="vendor", description="v", layouts={200: layout}, battery_unit=5)
    m = SimulatedMeter(
        ldn="SIM0000000000001",
        system_title=uni_ts_system_title("SIM", 1),
        key=bytes(16),
        profile=profile,
        clock=Clock(),
        rng=random.Random(1),
    )
    frame = decode_compact(m.compact_buffer(200), profile.layouts)
    assert frame["battery_hours"] == m.battery


def test_one_meter_in_ten_of_a_fleet_runs_low_on_battery_on_its_first_gas_day() -> None:
    clock = Clock()
    fleet = Fleet(20, REGISTRY["uni-ts-11291-12-2"], clock=clock, reactor=Reactor(), seed=4)
    tired = [m for m in fleet.meters if m.battery < 3650]
    assert [fleet.meters.index(m) for m in tired] == [9, 19]
    clock.hours(25)  # past the next gas day's start
    for m in fleet.meters:
        m.advance()
    for m in tired:
        assert [code for _t, _n, code, _d in m.events if code == EV_BATTERY_LOW] == [74]
        assert m.daily_diagnostic & 0x0100  # the battery bits of the daily diagnostic
    assert not any(e[2] == EV_BATTERY_LOW for m in fleet.meters if m not in tired for e in m.events)
