"""A meter's settings over a real push session with the simulator: a setting is SET, read
back in the same session and compared; the clock follows a sync within 2 s, the Italian
deviation sign included; a refusal gives the meter's reason in words."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest_twisted

from sac.dlms.axdr import OctetString
from sac.dlms.cosemtime import CosemDateTime
from sac.services.commands import queue
from sac.simulator.life import ITALY
from sac.simulator.meter import SimulatedMeter
from sac.store import Actor, CommandState
from tests.acquisition.conftest import REGISTRY, Sac, push_once, started
from tests.store.conftest import Backend

OPERATOR = Actor("olivia")
GENERIC = REGISTRY["uni-ts-11291-12-2"]


class Truncating(SimulatedMeter):
    """A firmware that keeps the first ten digits of a PDR it is sent."""

    __slots__ = ()

    def set(self, client_sap: int, attribute: Any, value: Any) -> Any:
        return super().set(client_sap, attribute, type(value)(str(value)[:10] + "0000"))


class WrongSign(SimulatedMeter):
    """A firmware that reads the clock's deviation with DLMS's sign, not Italy's."""

    __slots__ = ()

    def set(self, client_sap: int, attribute: Any, value: Any) -> Any:
        raw = bytearray(bytes(value))
        if len(raw) == 12:
            deviation = -int.from_bytes(raw[9:11], "big", signed=True)
            raw[9:11] = deviation.to_bytes(2, "big", signed=True)
        return super().set(client_sap, attribute, OctetString(bytes(raw)))


async def _run(store: Any, port: int, meter: Any, kind: str, params: dict) -> Any:
    now = dt.datetime.now(dt.UTC)
    command = await queue(store, GENERIC, meter.ldn, kind, params, OPERATOR, now=now)
    await push_once(port, meter)
    return await store.commands.get(command.id)


@pytest_twisted.ensureDeferred
async def test_a_pdr_set_is_confirmed_by_reading_it_back(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    done = await _run(store, port, m, "set-setting", {"setting": "pdr", "value": "09876543210987"})
    assert done.state is CommandState.DONE, done.result
    assert (
        done.result
        == "PDR (point of redelivery) set to 09876543210987, confirmed by reading it back"
    )
    assert m.pdr == "09876543210987"


@pytest_twisted.ensureDeferred
async def test_a_meter_that_keeps_another_value_fails_the_command_with_both(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    m.__class__ = Truncating
    done = await _run(store, port, m, "set-setting", {"setting": "pdr", "value": "09876543210987"})
    assert done.state is CommandState.FAILED
    assert done.result.endswith("sent 09876543210987, the meter reads back 09876543210000")


@pytest_twisted.ensureDeferred
async def test_the_clock_follows_a_sync_within_two_seconds(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    m.clock_offset = -1800.0  # half an hour slow
    done = await _run(store, port, m, "sync-clock", {})
    assert done.state is CommandState.DONE, done.result
    assert abs(m.now() - dt.datetime.now(dt.UTC).timestamp()) < 2
    # the meter's own clock, as it writes it: Italian local time, deviation with the Italian
    # sign (+60 in winter, +120 in summer)
    raw = m._date_time(m.now())
    cosem = CosemDateTime.from_bytes(bytes(raw))
    local = dt.datetime.now(ITALY)
    assert cosem.deviation == local.utcoffset() // dt.timedelta(minutes=1)
    assert abs(cosem.to_datetime(inverted_deviation=True) - local) < dt.timedelta(seconds=2)


@pytest_twisted.ensureDeferred
async def test_a_clock_the_meter_does_not_follow_fails_the_sync(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    m.__class__ = WrongSign
    done = await _run(store, port, m, "sync-clock", {})
    assert done.state is CommandState.FAILED
    assert "the meter reads back" in done.result and "s)" in done.result


@pytest_twisted.ensureDeferred
async def test_a_refused_read_gives_the_meters_reason_in_words(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    m.missing = frozenset({GENERIC.objects["pdr"].obis})
    done = await _run(store, port, m, "read-setting", {"setting": "pdr"})
    assert done.state is CommandState.FAILED
    assert done.result.endswith("object-undefined (the meter has no such object)")


@pytest_twisted.ensureDeferred
async def test_read_now_stores_the_settings_value(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    done = await _run(store, port, m, "read-setting", {"setting": "pdr"})
    assert done.state is CommandState.DONE
    assert done.result == f"PDR (point of redelivery): {m.pdr}"
