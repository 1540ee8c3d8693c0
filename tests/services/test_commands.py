"""Command parameters are checked when queued; housekeeping expires and requeues."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import pytest_twisted

from sac.profiles import discover_profiles
from sac.services.commands import CommandError, Kind, queue, validate
from sac.services.housekeeping import Housekeeping
from sac.services.readings import frame_readings
from sac.simulator.meter import SimulatedMeter
from sac.store import Actor, CommandState
from tests.acquisition.conftest import Sac, make_fleet, provision, push_once, sacs  # noqa: F401
from tests.store.conftest import Backend, backend, postgres  # noqa: F401 -- fixtures
from tests.store.test_operations import opened

REGISTRY = discover_profiles().registry
GENERIC = REGISTRY["uni-ts-11291-12-2"]
NOW = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("valve-open", {}, "kind"),
        ("valve-close", {"at": "2026-12-01T10:00:00+01:00"}, "at"),  # IC 70 meters: at once
        ("valve-close", {"when": "now"}, "when"),
        ("read-profile", {"object": "daily_profile", "from": "2026-11-01T00:00:00Z"}, "to"),
        ("read-profile", {"object": "billing", "from": "x", "to": "y"}, "object"),
        ("read-profile", {"object": "event_logbook", "from": "2026-11-01", "to": "2026-11-02"}, "from"),  # noqa: E501
        ("read-profile", {"object": "daily_profile", "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),  # noqa: E501
        ("read-attribute", {"class_id": 1, "obis": "1.2.3", "attribute": 2}, "obis"),
        ("read-attribute", {"class_id": True, "obis": "0.0.1.0.0.255", "attribute": 2}, "class_id"),
        ("set-attribute", {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 2, "type": "float", "value": 1}, "type"),  # noqa: E501
        ("set-attribute", {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 2, "type": "unsigned", "value": 300}, "value"),  # noqa: E501
        ("set-attribute", {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 1, "type": "unsigned", "value": 3}, "attribute"),  # noqa: E501
        ("set-attribute", {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 2, "type": "unsigned", "value": {"type": "unsigned", "value": 3}}, "type"),  # noqa: E501
        ("set-attribute", {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3, "value": {"type": "structure", "value": [{"type": "enum", "value": 256}]}}, "value.value[0]"),  # noqa: E501
        ("set-attribute", {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3, "value": {"type": "structure", "value": {"type": "enum", "value": 1}}}, "value"),  # noqa: E501
        ("set-attribute", {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3, "value": {"type": "array", "value": [{"type": "enum", "value": 1}, {"type": "long", "value": 1}]}}, "value"),  # noqa: E501
        ("set-attribute", {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3, "value": {"type": "structure", "value": [{"type": "float128", "value": 1}]}}, "value.value[0].type"),  # noqa: E501
        ("set-pdr", {"pdr": "1234"}, "pdr"),
        ("sync-clock", {"to": "now"}, "to"),
    ],
)  # fmt: skip
def test_bad_parameters_name_their_field(kind: str, params: dict, field: str) -> None:
    with pytest.raises(CommandError) as raised:
        validate(kind, params, GENERIC, NOW)
    assert raised.value.field == field


def test_good_parameters_are_stored_in_their_checked_form() -> None:
    assert validate("valve-close", {}, GENERIC, NOW) == {}
    got = validate(
        "read-profile",
        {
            "object": "daily_profile",
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-21T00:00:00+01:00",
        },
        GENERIC,
        NOW,
    )
    assert got == {
        "object": "daily_profile",
        "from": "2026-11-01T00:00:00+00:00",
        "to": "2026-11-21T00:00:00+01:00",
    }
    assert validate("set-pdr", {"pdr": "01234567890123"}, GENERIC, NOW) == {"pdr": "01234567890123"}
    scripted = next(p for p in REGISTRY.profiles.values() if p.valve_method.value == "script")
    at = validate("valve-enable-opening", {"at": "2026-11-22T06:00:00+01:00"}, scripted, NOW)
    assert at == {"at": "2026-11-22T06:00:00+01:00"}
    assert {k.value for k in Kind} >= {"valve-close", "valve-enable-opening", "read-profile"}


DESTINATION = {  # push_setup.send_destination_and_method: tcp, "10.0.0.1:4059", A-XDR
    "type": "structure",
    "value": [
        {"type": "enum", "value": 0},
        {"type": "octet-string", "value": "31302e302e302e313a34303539"},
        {"type": "enum", "value": 0},
    ],
}


def test_set_attribute_takes_a_typed_json_value_and_stores_it_typed() -> None:
    ref = {"class_id": 40, "obis": "0.1.25.9.0.255", "attribute": 3}
    got = validate("set-attribute", {**ref, "value": DESTINATION}, GENERIC, NOW)
    assert got == {**ref, "value": DESTINATION}
    nested = {"type": "array", "value": [{"type": "structure", "value": [DESTINATION]}]}
    assert validate("set-attribute", {**ref, "value": nested}, GENERIC, NOW)["value"] == nested
    # the scalar form as before: a type name and a plain value
    old = validate("set-attribute", {**ref, "type": "long-unsigned", "value": 300}, GENERIC, NOW)
    assert old == {**ref, "type": "long-unsigned", "value": 300}
    with pytest.raises(CommandError) as raised:
        bad = {"type": "structure", "value": [{"type": "long-unsigned", "value": 70000}]}
        validate("set-attribute", {**ref, "value": bad}, GENERIC, NOW)
    assert raised.value.field == "value.value[0]" and "0..65535" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_a_structure_set_through_set_attribute_reaches_the_meter(
    backend: Backend,  # noqa: F811 -- the fixture
    sacs: list[Sac],  # noqa: F811
) -> None:
    store = backend.make()
    await store.open()
    fleet = make_fleet(1, "honeywell-ei7")  # a scheduled-script valve: IC 22 takes a structure
    await provision(store, fleet)
    sac = Sac(store)
    sacs.append(sac)
    port = await sac.listen()
    [meter] = fleet.meters
    profile = REGISTRY["honeywell-ei7"]
    script = {  # executed_script: the valve script table, script 1 (close)
        "type": "structure",
        "value": [
            {"type": "octet-string", "value": "00000a006aff"},
            {"type": "long-unsigned", "value": 1},
        ],
    }
    params = {"class_id": 22, "obis": "0.0.15.0.1.255", "attribute": 2, "value": script}
    now = dt.datetime.now(dt.UTC)
    command = await queue(store, profile, meter.ldn, "set-attribute", params, Actor("a"), now=now)
    assert meter.schedule.script is None
    await push_once(port, meter)
    done = await store.commands.get(command.id)
    assert (done.state, done.result) == (CommandState.DONE, "set")
    assert meter.schedule.script == 1


@pytest_twisted.ensureDeferred
async def test_queue_checks_and_sets_the_priority_and_housekeeping_expires(
    backend: Backend,  # noqa: F811 -- the fixture
) -> None:
    from twisted.internet import reactor

    store = await opened(backend, meters=1)
    ldn = "FIO0000000000000"
    with pytest.raises(CommandError):
        await queue(store, GENERIC, ldn, "set-pdr", {"pdr": "x"}, Actor("a"), now=NOW)
    assert await store.commands.recent() == []
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=50)
    close = await queue(store, GENERIC, ldn, "valve-close", {}, Actor("a"), now=NOW, expires=soon)
    read = await queue(
        store, GENERIC, ldn, "read-attribute",
        {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 2}, Actor("a"), now=NOW,
    )  # fmt: skip
    assert close.priority > read.priority
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.1, lambda: None)
    expired, requeued = await Housekeeping(store, reactor=reactor).run()
    assert (expired, requeued) == (1, 0)
    assert (await store.commands.get(close.id)).state is CommandState.EXPIRED
    history = await store.commands.history(close.id)
    assert [h.state for h in history] == [CommandState.PENDING, CommandState.EXPIRED]


def test_a_fiorentini_frame_places_its_daily_values_at_the_daily_time() -> None:
    profile = REGISTRY["fiorentini"]
    t = 1_795_000_000.0
    meter = SimulatedMeter(
        ldn="FIO0000000000001", system_title=b"\x2f\x19" + bytes(6), key=bytes(16),
        profile=profile, clock=lambda: t, rng=random.Random(1), index_litres=5000,
    )  # fmt: skip
    meter.last_update -= 3 * 86400
    meter.last_day -= 3
    meter.advance()
    from sac.dlms.compact import decode_compact

    frame = decode_compact(meter.compact_buffer(18), profile.layouts)
    readings, status = frame_readings(meter.ldn, profile, frame, received=NOW, source="cf18")
    index = [r for r in readings if str(r.obis) == "7.0.13.2.0.255"]
    assert len(index) == 2  # the current one and the daily entry's, at different times
    daily_time = dt.datetime.fromtimestamp(frame["daily_unix_time"], dt.UTC)
    assert {r.captured for r in index} == {dt.datetime.fromtimestamp(t, dt.UTC), daily_time}
    assert all((r.scaler, r.unit) == (-3, 14) for r in index)
    assert status.index is not None and status.index.value == meter.index_litres
