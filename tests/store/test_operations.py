"""The store suite, continued: ingest with the meters' list values, the meter list, events,
the command queue, users and the audit trail -- on every backend."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from sac.dlms import Obis
from sac.passwords import ScryptParams, needs_rehash
from sac.store import (
    Actor,
    CommandState,
    CommandStateError,
    Conflict,
    Event,
    Ingest,
    IngestResult,
    MeterState,
    MeterStatus,
    NewMeter,
    Reading,
    Role,
    UnknownCommand,
    UnknownMeter,
    UnknownUser,
)
from sac.store.model import UNIT_PERCENT
from tests.store.conftest import Backend

INDEX = Obis("7.0.13.2.0.255")
EVENTS = Obis("7.0.99.98.1.255")
FAST = ScryptParams(log2_n=8)  # the real cost is for real passwords, not for tests
ALICE = Actor("alice", "192.0.2.7")
T0 = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def ldn(i: int) -> str:
    return f"FIO{i:013d}"


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 20, hour, minute, tzinfo=dt.UTC)


def index(meter: str, value: int, captured: dt.datetime) -> Reading:
    return Reading(meter, INDEX, 2, value, T0, "cf47", captured, -3, 14)


async def opened(backend: Backend, meters: int = 0, **kw: object):
    store = backend.make(password_params=FAST, **kw)
    await store.open()
    for i in range(meters):
        await store.meters.add(NewMeter(ldn(i), pdr=f"0{i:013d}"))
    return store


@pytest_twisted.ensureDeferred
async def test_ingest_stores_readings_events_and_the_list_values_together(
    backend: Backend,
) -> None:
    store = await opened(backend, meters=2)
    event = Event(ldn(0), EVENTS, 11, at(9, 30), T0, "cf48", counter=7)
    batch = Ingest(
        readings=[index(ldn(0), 123456, at(10)), index(ldn(1), 5, at(10))],
        events=[event],
        statuses=[
            MeterStatus(
                ldn(0),
                connected=T0,
                at=at(10),
                index=index(ldn(0), 123456, at(10)),
                diagnostic=0x0004,
                battery_value=3650,
                valve_state=1,
            )
        ],
    )
    assert await store.readings.ingest(batch) == IngestResult(2, 1)
    meter = await store.meters.get(ldn(0))
    assert meter.index == Decimal("123.456") and meter.index_unit == 14
    assert meter.index_captured == at(10) and meter.last_connection == T0
    assert (meter.diagnostic, meter.battery_value, meter.valve_state) == (4, 3650, 1)
    stored = replace(event, severity="info", category="unknown", id=1)  # classed by the store
    assert await store.events.latest(ldn(0)) == [stored]
    # the same session again (a spooled frame replayed): nothing is stored twice
    assert await store.readings.ingest(batch) == IngestResult(0, 0)
    assert await store.readings.count() == 2
    # a batch naming an unknown meter is refused whole
    with pytest.raises(UnknownMeter, match="FIO9999999999999"):
        await store.readings.ingest(
            Ingest(
                readings=[index(ldn(1), 6, at(11))],
                statuses=[MeterStatus("FIO9999999999999", connected=T0)],
            )
        )
    assert await store.readings.count() == 2


@pytest_twisted.ensureDeferred
async def test_list_values_only_move_forward(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    late = T0 + dt.timedelta(hours=1)
    await store.readings.ingest(
        Ingest(
            statuses=[
                MeterStatus(
                    ldn(0),
                    connected=late,
                    at=at(12),
                    index=index(ldn(0), 2000, at(12)),
                    diagnostic=1,
                    battery_value=80,
                    battery_unit=UNIT_PERCENT,
                )
            ]
        )
    )
    # an older session arrives after (a replay from the spool): it changes nothing it is
    # older for, and fills what was never known (the valve)
    await store.readings.ingest(
        Ingest(
            statuses=[
                MeterStatus(ldn(0), connected=T0, at=at(11), index=index(ldn(0), 1000, at(11)))
            ]
        )
    )
    later = late + dt.timedelta(minutes=1)
    await store.readings.ingest(
        Ingest(statuses=[MeterStatus(ldn(0), connected=later, at=at(13), valve_state=0)])
    )
    meter = await store.meters.get(ldn(0))
    assert meter.last_connection == later and meter.index_value == 2000
    assert (meter.battery_value, meter.battery_unit) == (80, UNIT_PERCENT)
    assert (meter.diagnostic, meter.valve_state, meter.status_at) == (1, 0, at(13))
    # a newer index moves it; a status with values and no time is a caller's bug
    await store.readings.ingest(
        Ingest(
            statuses=[
                MeterStatus(ldn(0), connected=later, index=index(ldn(0), 2500, at(14))),
            ]
        )
    )
    assert (await store.meters.get(ldn(0))).index == Decimal("2.5")
    with pytest.raises(ValueError, match="needs a time"):
        await store.readings.ingest(Ingest(statuses=[MeterStatus(ldn(0), diagnostic=3)]))


@pytest_twisted.ensureDeferred
async def test_which_list_value_is_newer_is_decided_by_the_sacs_receipt_time(
    backend: Backend,
) -> None:
    """Issue 18: a command read-back is stamped with the SAC's clock, a poll with the meter's;
    a meter whose clock is behind must still reach the list with what it says later."""
    store = await opened(backend, meters=1)
    # a valve close confirmed by a read-back at 10:00 (the SAC's clock)
    read_back = T0 + dt.timedelta(hours=2)
    await store.readings.ingest(
        Ingest(statuses=[MeterStatus(ldn(0), connected=read_back, at=read_back, valve_state=0)])
    )
    # an hour later a poll; the meter's clock is a day behind
    behind = read_back - dt.timedelta(days=1)
    polled = read_back + dt.timedelta(hours=1)
    await store.readings.ingest(
        Ingest(
            statuses=[
                MeterStatus(
                    ldn(0),
                    connected=polled,
                    at=behind,
                    index=index(ldn(0), 3000, behind),
                    battery_value=400,
                    valve_state=1,
                )
            ]
        )
    )
    meter = await store.meters.get(ldn(0))
    assert (meter.battery_value, meter.valve_state, meter.index_value) == (400, 1, 3000)
    assert meter.status_at == behind and meter.index_captured == behind  # shown as captured
    # a push spooled before the read-back, replayed after it: its receipt time is older
    spooled = read_back - dt.timedelta(minutes=5)
    await store.readings.ingest(
        Ingest(
            statuses=[
                MeterStatus(
                    ldn(0),
                    connected=spooled,
                    at=read_back + dt.timedelta(days=3),  # a meter clock far ahead
                    index=index(ldn(0), 2900, read_back + dt.timedelta(days=3)),
                    valve_state=2,
                )
            ]
        )
    )
    meter = await store.meters.get(ldn(0))
    assert (meter.valve_state, meter.index_value, meter.last_connection) == (1, 3000, polled)


@pytest_twisted.ensureDeferred
async def test_the_meter_list_pages_filters_and_searches(backend: Backend) -> None:
    store = await opened(backend, meters=25)
    await store.meters.set_state(ldn(3), MeterState.DISABLED)
    seen, after = [], None
    while True:
        page = await store.meters.page(after=after, limit=10)
        seen += [m.ldn for m in page.meters]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(ldn(i) for i in range(25))
    assert len((await store.meters.page(limit=25)).meters) == 25
    assert (await store.meters.page(limit=25)).next_after is None
    disabled = await store.meters.page(state=MeterState.DISABLED)
    assert [m.ldn for m in disabled.meters] == [ldn(3)]
    assert await store.meters.count() == 25
    assert await store.meters.count(MeterState.ACTIVE) == 24
    # a prefix of the LDN, or of the PDR
    assert [m.ldn for m in (await store.meters.page(search="FIO000000000001")).meters] == [
        ldn(i) for i in range(10, 20)
    ]
    assert [m.ldn for m in (await store.meters.page(search="00000000000022")).meters] == [ldn(22)]
    assert (await store.meters.page(search="nothing like it")).meters == ()
    with pytest.raises(ValueError):
        await store.meters.page(limit=0)


@pytest_twisted.ensureDeferred
async def test_a_command_goes_from_the_queue_to_the_meter_and_back(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, meters=2, clock=clock)
    close = await store.commands.queue(ldn(0), "valve-close", {"reason": "arrears"}, ALICE)
    assert close.state is CommandState.PENDING and close.requested_by == "alice"
    assert close.params == {"reason": "arrears"} and close.attempts == 0
    enable = await store.commands.queue(ldn(0), "valve-enable", {}, ALICE)
    other = await store.commands.queue(ldn(1), "valve-close", {}, ALICE)

    clock.advance(minutes=5)
    claimed = await store.commands.claim(ldn(0))
    assert [c.id for c in claimed] == [close.id, enable.id]  # oldest first, this meter's only
    assert all(c.state is CommandState.SENT and c.sent == clock.now for c in claimed)
    assert await store.commands.claim(ldn(0)) == []  # claimed once
    done = await store.commands.finish(close.id, True, "control_state=0")
    assert done.state is CommandState.DONE and done.result == "control_state=0"
    assert done.finished == clock.now
    # the connection dropped before the answer: back in the queue, then failed for good
    retried = await store.commands.retry(enable.id, "connection lost")
    assert retried.state is CommandState.PENDING and retried.sent is None
    [again] = await store.commands.claim(ldn(0))
    assert again.attempts == 2
    failed = await store.commands.finish(enable.id, False, "hardware-fault")
    assert failed.state is CommandState.FAILED

    # no move out of a final state; cancel only while pending
    with pytest.raises(CommandStateError, match="is done: not failed"):
        await store.commands.finish(close.id, False)
    cancelled = await store.commands.cancel(other.id, ALICE)
    assert cancelled.state is CommandState.CANCELLED
    with pytest.raises(CommandStateError, match="is cancelled"):
        await store.commands.finish(other.id, True)
    with pytest.raises(UnknownCommand):
        await store.commands.get(10_000)
    with pytest.raises(UnknownMeter):
        await store.commands.queue("FIO9999999999999", "valve-close", {}, ALICE)

    assert [c.id for c in await store.commands.recent(ldn=ldn(0))] == [enable.id, close.id]
    finished = await store.commands.recent(states=[CommandState.CANCELLED, CommandState.FAILED])
    assert {c.id for c in finished} == {enable.id, other.id}
    log = await store.audit.log()
    assert [(e.action, e.target) for e in log] == [
        ("cancel command", str(other.id)),
        ("queue valve-close", ldn(1)),
        ("queue valve-enable", ldn(0)),
        ("queue valve-close", ldn(0)),
    ]
    assert log[0].actor == "alice" and log[0].address == "192.0.2.7"


@pytest_twisted.ensureDeferred
async def test_commands_expire_and_stale_claims_come_back(backend: Backend) -> None:
    clock = Clock()
    store = await opened(backend, meters=1, clock=clock)
    soon = await store.commands.queue(ldn(0), "valve-close", {}, ALICE, clock.now.replace(hour=9))
    later = await store.commands.queue(
        ldn(0), "read-logbook", {}, ALICE, clock.now.replace(hour=20)
    )
    never = await store.commands.queue(ldn(0), "set-clock", {}, ALICE)
    with pytest.raises(ValueError, match="future"):
        await store.commands.queue(ldn(0), "valve-close", {}, ALICE, clock.now)
    clock.advance(hours=2)  # 10:00
    claimed = await store.commands.claim(ldn(0))
    assert [c.id for c in claimed] == [later.id, never.id]
    assert (await store.commands.get(soon.id)).state is CommandState.EXPIRED
    # the process running them died: after a while they go back to the queue
    clock.advance(minutes=10)
    assert await store.commands.requeue_stale(dt.timedelta(minutes=15)) == 0
    clock.advance(minutes=10)
    assert await store.commands.requeue_stale(dt.timedelta(minutes=15)) == 2
    clock.advance(hours=12)  # 22:00: the logbook read is past its deadline
    assert await store.commands.expire() == 1
    assert (await store.commands.get(later.id)).state is CommandState.EXPIRED
    assert (await store.commands.get(never.id)).state is CommandState.PENDING


@pytest_twisted.ensureDeferred
async def test_two_processes_never_claim_one_command(backend: Backend) -> None:
    first = await opened(backend, meters=1)
    second = backend.make()
    await second.open()
    queued = [await first.commands.queue(ldn(0), f"k{i}", {}, ALICE) for i in range(20)]
    claims = await gatherResults(
        [Deferred.fromCoroutine(s.commands.claim(ldn(0))) for s in (first, second) * 5]
    )
    ids = [c.id for claim in claims for c in claim]
    assert sorted(ids) == [c.id for c in queued]  # each once, none lost


@pytest_twisted.ensureDeferred
async def test_users_log_in_with_a_hashed_password(backend: Backend) -> None:
    store = await opened(backend)
    admin = await store.users.add("root", "correct horse battery", Role.ADMIN)
    assert admin.role is Role.ADMIN and admin.active
    await store.users.add("bob", "bob's long password", Role.VIEWER, by=Actor("root"))
    assert (await store.users.authenticate("root", "correct horse battery")) == admin
    assert await store.users.authenticate("root", "wrong horse battery") is None
    assert await store.users.authenticate("nobody", "correct horse battery") is None
    [(stored,)] = backend.raw("SELECT password FROM users WHERE name = 'root'")
    assert stored.startswith("scrypt$8$8$1$") and "horse" not in stored
    with pytest.raises(Conflict):
        await store.users.add("root", "another password", Role.VIEWER)
    with pytest.raises(ValueError, match="at least 8"):
        await store.users.add("carol", "short", Role.VIEWER)
    with pytest.raises(ValueError, match="user name"):
        await store.users.add(" carol", "long enough password", Role.VIEWER)

    # roles, disabling, a new password
    bob = await store.users.update("bob", Actor("root"), role=Role.OPERATOR)
    assert bob.role is Role.OPERATOR and Role.OPERATOR.may(Role.VIEWER)
    assert not Role.OPERATOR.may(Role.ADMIN)
    await store.users.update("bob", Actor("root"), active=False)
    assert await store.users.authenticate("bob", "bob's long password") is None
    await store.users.update("bob", Actor("root"), active=True, password="bob's new password")
    assert await store.users.authenticate("bob", "bob's new password") is not None
    # the last active admin stays one
    with pytest.raises(Conflict, match="last active admin"):
        await store.users.update("root", role=Role.OPERATOR)
    with pytest.raises(Conflict, match="last active admin"):
        await store.users.update("root", active=False)
    with pytest.raises(UnknownUser):
        await store.users.update("nobody", role=Role.VIEWER)
    assert [u.name for u in await store.users.all()] == ["bob", "root"]
    changes = [e for e in await store.audit.log() if not e.action.startswith("sign-in")]
    log = [(e.actor, e.action, e.target, e.detail) for e in changes]
    assert log == [
        ("root", "update user", "bob", "enabled, password"),
        ("root", "update user", "bob", "disabled"),
        ("root", "update user", "bob", "role operator"),
        ("root", "add user", "bob", "viewer"),
    ]


@pytest_twisted.ensureDeferred
async def test_stronger_password_parameters_rehash_at_login(backend: Backend) -> None:
    store = await opened(backend)
    await store.users.add("root", "correct horse battery", Role.ADMIN)
    await store.close()
    stronger = ScryptParams(log2_n=9)
    store = backend.make(password_params=stronger)
    await store.open()
    assert await store.users.authenticate("root", "correct horse battery") is not None
    [(stored,)] = backend.raw("SELECT password FROM users WHERE name = 'root'")
    assert not needs_rehash(stored, stronger)
    assert await store.users.authenticate("root", "correct horse battery") is not None


@pytest_twisted.ensureDeferred
async def test_an_audit_line_and_its_change_are_one(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    with pytest.raises(Conflict):
        await store.meters.add(NewMeter(ldn(0)), by=ALICE)  # refused: no audit line
    await store.meters.add(NewMeter(ldn(1)), by=ALICE)
    await store.meters.set_state(ldn(1), MeterState.DISABLED, by=ALICE)
    await store.keys.set(ldn(1), 1, bytes(16), by=ALICE)
    await store.audit.record(Actor("bob", "198.51.100.1"), "login")
    log = await store.audit.log()
    assert [(e.actor, e.action, e.target) for e in log] == [
        ("bob", "login", None),
        ("alice", "set keys", ldn(1)),
        ("alice", "set meter disabled", ldn(1)),
        ("alice", "add meter", ldn(1)),
    ]
    assert log[1].detail == "client 1" and bytes(16).hex() not in str(log)  # no key in clear
    assert [e.id for e in await store.audit.log(limit=2, before=log[1].id)] == [
        log[2].id,
        log[3].id,
    ]


@pytest_twisted.ensureDeferred
async def test_processes_starting_together_migrate_once(backend: Backend) -> None:
    stores = [backend.make() for _ in range(4)]
    versions = await gatherResults([Deferred.fromCoroutine(s.open()) for s in stores])
    latest = versions[0][1]
    assert sorted(found for found, _ in versions) == [0, latest, latest, latest]


@pytest_twisted.ensureDeferred
async def test_awkward_values_survive_the_bulk_path(backend: Backend) -> None:
    store = await opened(backend, meters=1)
    awkward = "cf\"47\\,{x} NULL 'é"
    values = [-(2**63), 2**63 - 1, 21.5, -0.001, 0, None]
    batch = [
        Reading(ldn(0), INDEX, 2, v, T0, awkward, at(h), None, None, bytes(range(256)))
        for h, v in enumerate(values)
    ]
    event = Event(ldn(0), EVENTS, 65535, at(1), T0, awkward, counter=2**32 - 1)
    assert await store.readings.ingest(Ingest(readings=batch, events=[event])) == IngestResult(6, 1)
    back = await store.readings.last(ldn(0), INDEX, limit=10)
    assert [r.value for r in reversed(back)] == values
    assert all(r.raw == bytes(range(256)) and r.source == awkward for r in back)
    assert await store.events.latest(ldn(0)) == [
        replace(event, severity="info", category="unknown", id=1)
    ]
