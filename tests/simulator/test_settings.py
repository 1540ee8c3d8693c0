"""The simulated meter applies the settings the SAC sends (issue 22): each one SET and read
back through the Management client's real codec path (ciphered APDUs, wrapper, the meter's
protocol), the refusals, the pushes that follow the push schedule, the opening validity and
the clock sync."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Any

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock as Reactor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from sac.dlms import Obis
from sac.dlms.association import ClientAssociation
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Enum,
    Integer,
    LongUnsigned,
    OctetString,
    Structure,
    Unsigned,
    VisibleString,
)
from sac.dlms.cosem import DataAccessResult
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.events import AssociationAccepted, GetCompleted, SetCompleted
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.profiles import STANDARD_OBJECTS, CosemRef, ValveAction, discover_profiles, ref
from sac.profiles import uni_ts_system_title as title
from sac.simulator.fleet import Fleet, SimClock
from sac.simulator.life import EV_CLOCK_SYNCED, EV_OPENING_END, ITALY, ValveState
from sac.simulator.meter import SimulatedMeter
from sac.simulator.session import MeterProtocol
from sac.simulator.settings import DEFAULTS, Settings

REGISTRY = discover_profiles().registry
GENERIC = REGISTRY["uni-ts-11291-12-2"]
START = dt.datetime(2026, 1, 10, 5, 0, tzinfo=dt.UTC).timestamp()  # 06:00 in Italy
EVERY_DAY = b"\xff" * 5
OK, UNMATCHED, REFUSED = (
    DataAccessResult.SUCCESS,
    DataAccessResult.TYPE_UNMATCHED,
    DataAccessResult.OTHER_REASON,
)


def meter(profile: Any = GENERIC, clock: Any = lambda: START, serial: int = 1) -> SimulatedMeter:
    return SimulatedMeter(
        ldn=f"SIM{serial:013d}",
        system_title=title("SIM", serial),
        key=bytes(range(16)),
        profile=profile,
        clock=clock,
        rng=random.Random(serial),
    )


class Link:
    """The SAC's Management client (SAP 1, ciphered, pre-established) and a meter's protocol,
    in memory: each request encoded, ciphered, framed, answered and decoded for real."""

    def __init__(self, m: SimulatedMeter, client_sap: int = 1) -> None:
        self.meter = m
        self.protocol = MeterProtocol(m, reactor=Reactor())
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        security = None
        if client_sap == 1:
            security = SecurityContext(
                Suite0Cipher(m.key),
                b"SACSACSA",
                peer_system_title=m.system_title,
                invocation_counter=(m.sac_counter or 0) + 1,
            )
        self.client = ClientAssociation(
            client_sap, 1, security=security, pre_established=security is not None
        )
        if security is None:  # the Public client associates first
            self.client.associate()
            self.protocol.dataReceived(self.client.data_to_send())
            [accepted] = self.client.receive_data(self.transport.value())
            assert isinstance(accepted, AssociationAccepted)
            self.transport.clear()

    def _answer(self) -> Any:
        self.protocol.dataReceived(self.client.data_to_send())
        [event] = self.client.receive_data(self.transport.value())
        self.transport.clear()
        assert isinstance(event, GetCompleted | SetCompleted), event
        return event.result

    def where(self, quantity: str) -> CosemRef:
        return self.meter.profile.objects.get(quantity, STANDARD_OBJECTS[quantity])

    def get(self, quantity: str, attribute: int = 2) -> Any:
        target = self.where(quantity)
        self.client.get(target.class_id, target.obis, attribute)
        return self._answer()

    def set(self, quantity: str, attribute: int, value: Any) -> DataAccessResult:
        target = self.where(quantity)
        self.client.set(target.class_id, target.obis, attribute, value)
        return self._answer()


def time_(h: int, m: int) -> OctetString:
    return OctetString(CosemTime(h, m, 0, 0).to_bytes())


def stamp(day: dt.date | None, h: int, m: int) -> OctetString:
    """A 12-byte date-time, its date of wildcards when ``day`` is None."""
    date = CosemDate.from_date(day).to_bytes() if day else EVERY_DAY
    return OctetString(date + CosemTime(h, m, 0, 0).to_bytes() + b"\x80\x00\xff")


def entries(*pairs: tuple[bytes, bytes]) -> Array:
    return Array(Structure((OctetString(a), OctetString(b))) for a, b in pairs)


def object_list(template: int) -> Array:
    ln = bytes(Obis.from_groups(0, 0, 66, 0, template, 255))
    return Array((Structure((LongUnsigned(62), OctetString(ln), Integer(2), LongUnsigned(0))),))


SCHEDULE = entries((time_(10, 30), EVERY_DAY), (time_(22, 0), CosemDate(2026, 2, 1).to_bytes()))
WINDOW = entries((stamp(None, 8, 0), stamp(None, 12, 0)))
BILLING = stamp(None, 6, 0)[:2] + b"\x03\x0f" + stamp(None, 6, 0)[4:]  # 15 March, any year
# (quantity, attribute, a value to SET, the event it logs)
APPLIED = [
    ("push_schedule", 4, SCHEDULE, 15),
    ("push_setup", 2, object_list(48), 15),
    ("push_setup", 3, Structure((Enum(254), OctetString(b"sac.example:4059"), Enum(0))), 15),
    ("push_setup", 4, WINDOW, 15),
    ("push_setup", 5, LongUnsigned(900), 15),
    ("billing_period_start", 2, OctetString(BILLING), 15),
    ("valve_configuration", 2, LongUnsigned(0x8005), 15),
    ("valve_pin", 2, LongUnsigned(4321), 108),
    ("opening_validity", 2, LongUnsigned(90), 15),
    ("no_communication_threshold", 2, Array((LongUnsigned(45),)), 15),
    ("tamper_threshold", 2, Array((Unsigned(3),)), 15),
]


@pytest.mark.parametrize(("quantity", "attribute", "value", "event"), APPLIED)
def test_each_setting_is_applied_logged_and_read_back(
    quantity: str, attribute: int, value: Any, event: int
) -> None:
    m = meter()
    link = Link(m)
    before = link.get(quantity, attribute)
    assert before != value
    assert link.set(quantity, attribute, value) == OK
    assert link.get(quantity, attribute) == value
    assert m.param_events[-1][2] == event and m.events[-1][2] == event
    assert m.settings is not DEFAULTS and Settings() == DEFAULTS  # the shared ones unchanged


def test_the_defaults_of_a_meter_nobody_configured() -> None:
    link = Link(meter())
    assert link.get("push_schedule", 4) == Array()
    assert link.get("push_setup", 2) == object_list(47)  # the profile's usual push
    assert link.get("push_setup", 3) == Structure((Enum(0), OctetString(b""), Enum(0)))
    assert link.get("push_setup", 4) == Array() and link.get("push_setup", 5) == 0
    assert link.get("push_setup", 6) == DataAccessResult.OBJECT_UNAVAILABLE
    assert CosemDateTime.from_bytes(link.get("billing_period_start")).day == 1
    assert (link.get("valve_configuration"), link.get("valve_pin")) == (0, 0)
    assert link.get("opening_validity") == LongUnsigned(1440)
    assert link.get("no_communication_threshold") == Array((LongUnsigned(30),))
    assert link.get("tamper_threshold") == Array((Unsigned(5),))
    # the Public client neither reads nor writes them
    public = Link(link.meter, client_sap=16)
    assert public.get("valve_pin") == DataAccessResult.READ_WRITE_DENIED
    assert public.set("valve_pin", 2, LongUnsigned(1)) == DataAccessResult.READ_WRITE_DENIED


REFUSALS = [
    # the wrong A-XDR shape: type-unmatched
    ("push_schedule", 4, Structure((time_(10, 0), OctetString(EVERY_DAY))), UNMATCHED),
    ("push_schedule", 4, Array((Structure((time_(10, 0),)),)), UNMATCHED),
    ("push_setup", 2, Array((Structure((Unsigned(62), OctetString(b"x" * 6))),)), UNMATCHED),
    ("push_setup", 3, Structure((Enum(0), VisibleString("h:1"), Enum(0))), UNMATCHED),
    ("push_setup", 5, DoubleLongUnsigned(10), UNMATCHED),
    ("billing_period_start", 2, LongUnsigned(1), UNMATCHED),
    ("valve_pin", 2, Unsigned(12), UNMATCHED),
    ("no_communication_threshold", 2, Array((Unsigned(45),)), UNMATCHED),
    ("tamper_threshold", 2, Unsigned(3), UNMATCHED),
    # the right shape, a value the meter does not take: other-reason
    ("push_schedule", 4, entries(*[(time_(h, 0), EVERY_DAY) for h in range(5)]), REFUSED),
    ("push_schedule", 4, entries((time_(25, 0), EVERY_DAY)), REFUSED),
    ("push_schedule", 4, entries((b"\x0a\x00\x00", EVERY_DAY)), REFUSED),
    ("push_schedule", 4, entries((time_(10, 0), b"\x07\xea\x02\x1e\xff")), REFUSED),  # 30 Feb
    ("push_setup", 2, object_list(99), REFUSED),  # no layout 99
    ("push_setup", 2, Array(), REFUSED),
    ("push_setup", 3, Structure((Enum(0), OctetString(b"h:1"), Enum(1))), REFUSED),
    ("push_setup", 4, entries((stamp(None, 8, 0), stamp(dt.date(2026, 1, 1), 9, 0))), REFUSED),
    ("billing_period_start", 2, OctetString(b"\x00" * 11), REFUSED),
    ("valve_pin", 2, LongUnsigned(10_000), REFUSED),
    ("opening_validity", 2, LongUnsigned(0), REFUSED),
    ("tamper_threshold", 2, Array((Unsigned(3), Unsigned(4))), REFUSED),
]


@pytest.mark.parametrize(("quantity", "attribute", "value", "answer"), REFUSALS)
def test_a_setting_of_the_wrong_shape_or_value_is_refused_and_changes_nothing(
    quantity: str, attribute: int, value: Any, answer: DataAccessResult
) -> None:
    m = meter()
    link = Link(m)
    before = link.get(quantity, attribute)
    assert link.set(quantity, attribute, value) == answer
    assert link.get(quantity, attribute) == before
    assert not m.param_events and m.settings is DEFAULTS


def test_a_vendor_profile_keeps_its_settings_where_its_object_map_says() -> None:
    objects = {**STANDARD_OBJECTS, "push_setup": ref(40, "0.11.25.9.0.255")}
    vendor = dataclasses.replace(GENERIC, name="vendor", objects=objects)
    m = meter(vendor)
    link = Link(m)
    assert link.set("push_setup", 5, LongUnsigned(60)) == OK
    assert link.get("push_setup", 5) == LongUnsigned(60)
    link.client.get(40, Obis("0.1.25.9.0.255"), 5)  # the generic address: nothing here
    assert link._answer() == DataAccessResult.OBJECT_UNDEFINED


def test_the_opening_validity_bounds_an_enabled_opening() -> None:
    now = [START]
    m = meter(clock=lambda: now[0])
    assert Link(m).set("opening_validity", 2, LongUnsigned(30)) == OK
    m.operate_valve(ValveAction.CLOSE)
    m.operate_valve(ValveAction.ENABLE_OPENING)
    m.open_at = None  # the customer does not come
    now[0] += 29 * 60
    m.advance()
    assert m.valve_state == ValveState.READY
    now[0] += 2 * 60
    m.advance()
    assert m.valve_state == ValveState.DISCONNECTED
    assert m.metro_events[-1][:2] == (int(START) + 30 * 60, EV_OPENING_END)
    # shortened while the opening runs: it ends at once
    m.operate_valve(ValveAction.ENABLE_OPENING)
    m.open_at = None
    now[0] += 20 * 60
    assert Link(m).set("opening_validity", 2, LongUnsigned(10)) == OK
    now[0] += 1
    m.advance()
    assert m.valve_state == ValveState.DISCONNECTED


@pytest.mark.parametrize(
    ("when", "deviation"),
    [(dt.datetime(2026, 1, 10, 14, 0, 7), 60), (dt.datetime(2026, 7, 10, 14, 0, 7), 120)],
)
def test_the_clock_follows_a_sync_with_the_italian_deviation_sign(
    when: dt.datetime, deviation: int
) -> None:
    """The SAC's sync-clock (sac/services/commands.py) writes Italian local time with the
    inverted deviation (+60 in winter, +120 in summer); the meter's clock follows it within
    2 s and says it back with the same sign."""
    t = when.replace(tzinfo=ITALY).timestamp()
    now = [t + 3 * 3600 + 17]  # the meter runs 3 h ahead of the SAC
    m = meter(clock=lambda: now[0])
    link = Link(m)
    local = dt.datetime.fromtimestamp(t, ITALY)
    raw = CosemDateTime.from_datetime(local, inverted_deviation=True).to_bytes()
    assert raw[9:11] == deviation.to_bytes(2, "big", signed=True)
    assert link.set("clock", 2, OctetString(raw)) == OK
    assert abs(m.now() - t) < 2 and m.events[-1][2] == EV_CLOCK_SYNCED
    read = CosemDateTime.from_bytes(link.get("clock"))
    assert read.deviation == deviation
    assert abs(read.to_datetime(inverted_deviation=True).timestamp() - t) < 2
    assert abs(int(link.get("unix_time")) - t) < 2
    assert link.get("clock", 3) == 60  # time_zone: CET, with the Italian sign


# --- push mode ---------------------------------------------------------------------------


def pushing(count: int, interval: float) -> tuple[Fleet, MemoryReactorClock, SimClock]:
    reactor = MemoryReactorClock()
    clock = SimClock(reactor, 60, start=START)
    fleet = Fleet(count, GENERIC, clock=clock, reactor=reactor, seed=5)
    fleet.start_pushing("127.0.0.1", 4059, interval=interval)
    return fleet, reactor, clock


def push_now(fleet: Fleet, reactor: MemoryReactorClock, m: SimulatedMeter) -> tuple[Any, int]:
    """Runs ``m``'s pending push: where it connects and its template; the SAC is not there."""
    call = fleet._calls[m.ldn]
    reactor.advance(call.getTime() - reactor.seconds())
    host, port, factory, *_ = reactor.tcpClients.pop()
    template = factory.buildProtocol(None)._wrappedProtocol.push_template
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    return (host, port), template


def sim_time_of(fleet: Fleet, m: SimulatedMeter, clock: SimClock, reactor: Any) -> float:
    """The simulated time at which ``m``'s pending push will run."""
    call = fleet._calls[m.ldn]
    return clock() + (call.getTime() - reactor.seconds()) * clock.speed


def test_pushes_move_to_the_push_schedule_with_a_bounded_randomisation() -> None:
    fleet, reactor, clock = pushing(12, interval=3 * 3600)
    old = {m.ldn: fleet._calls[m.ldn] for m in fleet.meters}
    for m in fleet.meters:
        link = Link(m)
        assert link.set("push_setup", 5, LongUnsigned(600)) == OK
        assert link.set("push_schedule", 4, entries((time_(10, 30), EVERY_DAY))) == OK
        assert old[m.ldn].cancelled  # the pending push was replaced
    at = dt.datetime(2026, 1, 10, 10, 30, tzinfo=ITALY).timestamp()
    firsts = [sim_time_of(fleet, m, clock, reactor) for m in fleet.meters]
    assert all(at - 1 <= f <= at + 600 + 1 for f in firsts)
    assert max(firsts) - min(firsts) > 60  # spread, not all at once
    # after the push: the same time tomorrow, not the 3-hour interval
    first = min(fleet.meters, key=lambda m: fleet._calls[m.ldn].getTime())
    push_now(fleet, reactor, first)
    nxt = sim_time_of(fleet, first, clock, reactor)
    assert at + 86400 - 1 <= nxt <= at + 86400 + 601
    # an empty schedule: the interval again
    m = first
    assert Link(m).set("push_schedule", 4, Array()) == OK
    assert Link(m).set("push_setup", 5, LongUnsigned(0)) == OK
    delay = sim_time_of(fleet, m, clock, reactor) - clock()
    assert 0.9 * 3 * 3600 - 1 <= delay <= 1.1 * 3 * 3600 + 1


def test_a_push_waits_for_its_window_and_follows_its_destination_and_template() -> None:
    fleet, reactor, clock = pushing(1, interval=3600)
    [m] = fleet.meters
    link = Link(m)
    assert link.get("push_setup", 3)[1] == b"127.0.0.1:4059"  # where its fleet pushes
    assert link.set("push_schedule", 4, entries((time_(7, 0), EVERY_DAY))) == OK
    assert link.set("push_setup", 4, WINDOW) == OK  # 08:00-12:00: 07:00 waits for 08:00
    assert sim_time_of(fleet, m, clock, reactor) == pytest.approx(
        dt.datetime(2026, 1, 10, 8, 0, tzinfo=ITALY).timestamp(), abs=1
    )
    destination = Structure((Enum(254), OctetString(b"10.1.2.3:4100"), Enum(0)))
    assert link.set("push_setup", 3, destination) == OK
    assert link.set("push_setup", 2, object_list(48)) == OK
    assert push_now(fleet, reactor, m) == (("10.1.2.3", 4100), 48)
    # a destination that is not host:port: the fleet's (logged)
    bad = Structure((Enum(254), OctetString(b"nowhere"), Enum(0)))
    assert link.set("push_setup", 3, bad) == OK
    assert push_now(fleet, reactor, m)[0] == ("127.0.0.1", 4059)
    assert fleet.failures == 2


def test_a_meter_nobody_configures_pushes_as_before() -> None:
    fleet, reactor, clock = pushing(3, interval=3600)
    for m in fleet.meters:
        delay = sim_time_of(fleet, m, clock, reactor) - clock()
        assert 0 <= delay <= 3600  # a random moment of the first interval
        assert m.settings is fleet.meters[0].settings  # shared
    m = min(fleet.meters, key=lambda m: fleet._calls[m.ldn].getTime())
    where, template = push_now(fleet, reactor, m)
    assert where == ("127.0.0.1", 4059) and template in (47, 48)
    delay = sim_time_of(fleet, m, clock, reactor) - clock()
    assert 0.9 * 3600 - 1 <= delay <= 1.1 * 3600 + 1


def test_execution_times_and_windows_in_italian_time() -> None:
    from sac.simulator.settings import in_window, next_execution

    def at(*fields: int) -> float:
        return dt.datetime(*fields, tzinfo=ITALY).timestamp()

    saturday = at(2026, 1, 10, 6, 0)
    monday = CosemDate(None, None, None, 1).to_bytes()
    once = CosemDate(2026, 1, 9).to_bytes()
    assert next_execution(((time_(5, 0), EVERY_DAY),), saturday) == at(2026, 1, 11, 5, 0)
    assert next_execution(((time_(5, 0), monday),), saturday) == at(2026, 1, 12, 5, 0)
    assert next_execution(((time_(5, 0), once),), saturday) is None  # past
    assert next_execution(((time_(5, 0), once), (time_(9, 0), monday)), saturday) == at(
        2026, 1, 12, 9, 0
    )
    # summer time: 10:30 is 08:30 UTC
    july = at(2026, 7, 1, 6, 0)
    utc = dt.datetime(2026, 7, 1, 8, 30, tzinfo=dt.UTC).timestamp()
    assert next_execution(((time_(10, 30), EVERY_DAY),), july) == utc
    overnight = ((stamp(None, 22, 0), stamp(None, 2, 0)),)
    assert in_window(overnight, at(2026, 1, 10, 23, 0)) == at(2026, 1, 10, 23, 0)
    assert in_window(overnight, at(2026, 1, 10, 1, 0)) == at(2026, 1, 10, 1, 0)
    assert in_window(overnight, at(2026, 1, 10, 3, 0)) == at(2026, 1, 10, 22, 0)
    dated = ((stamp(dt.date(2026, 2, 1), 8, 0), stamp(dt.date(2026, 2, 3), 8, 0)),)
    assert in_window(dated, saturday) == at(2026, 2, 1, 8, 0)
    assert in_window(dated, at(2026, 3, 1, 0, 0)) == at(2026, 3, 1, 0, 0)  # past: no bound
