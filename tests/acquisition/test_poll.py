"""Polling end to end: the SAC dials simulated meters that listen on loopback TCP."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

from sac.dlms import Obis
from sac.profiles import ValveAction, discover_profiles
from sac.services.poll import PollFailed, poll_meter
from sac.services.poller import Poller, PollSettings
from sac.services.session import SessionSettings
from sac.simulator.meter import EVENT_LOG
from sac.store import Actor, CommandState, NewMeter
from sac.store.keycsv import parse_key_csv
from tests.acquisition.conftest import Backend, make_fleet
from tests.acquisition.forger import Forger, Rewrite

REGISTRY = discover_profiles().registry
SETTINGS = SessionSettings(name="poll-test")
INDEX = Obis("7.0.13.2.0.255")
OPERATOR = Actor("olivia")


async def _listening(backend: Backend, count: int = 1, profile: str = "uni-ts-11291-12-2", **kw):
    store = backend.make()
    await store.open()
    fleet = make_fleet(count, profile)
    # a few simulated days of life: daily profile entries and logbook events
    for m in fleet.meters:
        m.last_update -= 5 * 86400
        m.last_day -= 5
        m.advance()
    ports = await fleet.listen(0)
    for m, port in zip(fleet.meters, ports, strict=True):
        await store.meters.add(
            NewMeter(
                m.ldn,
                pdr=m.pdr,
                system_title=m.system_title,
                profile=profile,
                address=f"127.0.0.1:{port}",
                **kw,
            )
        )
    rows, errors = parse_key_csv(fleet.keys_csv())
    assert not errors
    await store.keys.import_rows(rows)
    return store, fleet, ports


async def poll_then_stop(store: Any, fleet: Any, ldn: str, port: int) -> Any:
    try:
        return await poll_meter(
            ldn, f"127.0.0.1:{port}", store=store, registry=REGISTRY, reactor=reactor,
            settings=SETTINGS,
        )  # fmt: skip
    finally:
        await fleet.stop()


@pytest_twisted.ensureDeferred
async def test_a_poll_reads_every_list_and_detail_object(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    assert m.operate_valve(ValveAction.CLOSE)  # an event in its logbook
    result = await poll_then_stop(store, fleet, m.ldn, ports[0])
    assert result.readings > 10 and result.events > 0
    meter = await store.meters.get(m.ldn)
    assert meter is not None
    assert meter.index_value == m.index_litres and meter.index_unit == 14
    assert meter.valve_state == 0 and meter.diagnostic == m.current_diagnostic
    assert meter.battery_value == m.battery and meter.last_connection is not None
    # the daily profile (selective access by range) stored at the entries' own times
    daily = await store.readings.last(m.ldn, INDEX, limit=10)
    times = {r.captured for r in daily}
    assert len(times) >= 5
    assert {int(u) for u, *_ in m.daily} >= {
        int(t.timestamp()) for t in times if t != daily[0].captured
    }
    events = await store.events.latest(m.ldn)
    [event] = [e for e in events if e.code == 30]  # valve closed (docs/uni-ts-11291.md §1.9)
    assert event.source == "poll"
    assert {e.code for e in events} <= {30, 90}  # and a gas month's billing close, if one passed
    pdr = await store.readings.last(m.ldn, Obis("0.0.96.1.10.255"))
    assert pdr[0].raw is not None and m.pdr.encode() in pdr[0].raw


@pytest_twisted.ensureDeferred
async def test_a_poll_runs_the_queued_commands(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    close = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    result = await poll_then_stop(store, fleet, m.ldn, ports[0])
    assert result.commands == 1
    done = await store.commands.get(close.id)
    assert done.state is CommandState.DONE, done.result
    assert m.valve_state == 0


@pytest_twisted.ensureDeferred
async def test_a_poll_of_a_meter_that_answers_as_another_fails(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend, count=2)
    try:
        a, b = fleet.meters
        try:
            await poll_meter(
                a.ldn,
                f"127.0.0.1:{ports[1]}",
                store=store,
                registry=REGISTRY,
                reactor=reactor,
                settings=SETTINGS,
            )
        except PollFailed as exc:
            assert f"answers as {b.ldn!r}" in str(exc)
        else:
            raise AssertionError("the poll of the wrong meter succeeded")
    finally:
        await fleet.stop()


@pytest_twisted.ensureDeferred
async def test_the_scheduler_polls_due_meters_and_backs_off_on_failure(backend: Backend) -> None:
    store, fleet, _ports = await _listening(backend, count=3, poll_interval=3600)
    await store.meters.add(NewMeter("SIM9999999999999", address="127.0.0.1:1"))  # nobody there
    poller = Poller(
        store,
        REGISTRY,
        reactor=reactor,
        settings=PollSettings(concurrency=2, connect_timeout=2),
        session=SETTINGS,
    )
    try:
        for _ in range(3):  # two ticks fill the 2 slots; the third takes what is left
            await poller.tick()
            while poller.running_polls:
                await next(iter(poller.running_polls.values()))
        await poller.tick()
        while poller.running_polls:
            await next(iter(poller.running_polls.values()))
    finally:
        await fleet.stop()
    assert poller.metrics.value("sac_polls_total", outcome="done") == 3
    assert poller.metrics.value("sac_polls_total", outcome="failed") == 1
    for m in fleet.meters:
        meter = await store.meters.get(m.ldn)
        assert meter is not None and meter.index_value == m.index_litres
    rows = backend.raw("SELECT ldn, next_poll, poll_failures FROM meters ORDER BY ldn")
    due = {ldn: (next_poll, failures) for ldn, next_poll, failures in rows}
    assert due["SIM9999999999999"][1] == 1
    assert await store.meters.claim_polls(10, dt.timedelta(minutes=5)) == []  # nothing due now


# --- polls that meet a meter's refusals and quirks (issue 18, item 5) ----------------------------


@pytest_twisted.ensureDeferred
async def test_a_poll_keeps_what_it_read_when_one_logbook_cannot_be_read(
    backend: Backend,
) -> None:
    store, fleet, _ports = await _listening(backend, poll_interval=3600)
    [m] = fleet.meters
    assert m.operate_valve(ValveAction.CLOSE)  # events in both logbooks... one is refused
    m.missing = frozenset({EVENT_LOG})  # its firmware lacks the event logbook
    close = await store.commands.queue(m.ldn, "valve-enable-opening", {}, OPERATOR, priority=20)
    poller = Poller(store, REGISTRY, reactor=reactor, session=SETTINGS)
    try:
        [job] = await store.meters.claim_polls(1, dt.timedelta(minutes=5))
        result = await poller.run(job)
    finally:
        await fleet.stop()
    assert result is not None
    [skipped] = result.skipped
    assert skipped.startswith("event_logbook:") and "object-undefined" in skipped
    meter = await store.meters.get(m.ldn)
    assert meter is not None and meter.last_connection is not None
    assert meter.index_value == m.index_litres and meter.battery_value == m.battery
    assert len(await store.readings.last(m.ldn, INDEX, limit=10)) >= 5  # the daily profile
    assert (await store.commands.get(close.id)).state is CommandState.DONE  # and it went on
    assert poller.metrics.value("sac_polls_total", outcome="partial") == 1
    [(failures,)] = backend.raw("SELECT poll_failures FROM meters")
    assert failures == 0  # not retried as a failure: the next poll is at the interval


@pytest.mark.parametrize(
    "rlre",
    [
        "6305800100",  # its length says 5, 3 bytes follow
        "6304be02ffff",  # user-information that is not an octet string
        "d80101",  # an exception-response instead
        "63",  # a tag alone
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_malformed_release_answer_is_a_quirk_not_a_failed_poll(
    backend: Backend, rlre: str
) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters

    def rule(direction: str, pdu: Any) -> Rewrite | None:
        if direction == "to-sac" and pdu.apdu[:1] == b"\x63":
            return Rewrite(bytes.fromhex(rlre))
        return None

    forger = Forger(ports[0], rule, near="sac")
    relay = await forger.listen()
    logged: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        result = await poll_meter(
            m.ldn, f"127.0.0.1:{relay}", store=store, registry=REGISTRY, reactor=reactor,
            settings=SETTINGS,
        )  # fmt: skip
    finally:
        globalLogPublisher.removeObserver(observe)
        await forger.stop()
        await fleet.stop()
    assert forger.forged == 1 and result.readings > 10 and not result.skipped
    meter = await store.meters.get(m.ldn)
    assert meter is not None and meter.index_value == m.index_litres
    assert any("quirk" in line and m.ldn in line for line in logged), logged
