"""Push sessions end to end: simulated meters call a real listener over loopback TCP."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.error import ConnectionDone

from sac.dlms import Obis
from sac.store import Actor, CommandState
from tests.acquisition.conftest import Backend, Sac, push_once, started
from tests.acquisition.test_slow import until

INDEX = Obis("7.0.13.2.0.255")
OPERATOR = Actor("olivia", "192.0.2.9")


@pytest_twisted.ensureDeferred
async def test_a_push_is_stored_with_the_list_values(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    protocol = await push_once(port, m)
    assert protocol.end_reason.check(ConnectionDone)  # a clean close: the push is acknowledged
    [reading] = await store.readings.last(m.ldn, INDEX)
    assert reading.value == m.index_litres and (reading.scaler, reading.unit) == (-3, 14)
    meter = await store.meters.get(m.ldn)
    assert meter is not None and meter.last_connection is not None
    assert meter.index_value == m.index_litres and meter.valve_state == 1
    assert await store.counters.last(m.ldn, 1) == (0, m.our_counter - 1)
    metrics = sac.acquisition.metrics
    assert metrics.value("sac_push_stored_total") == 1
    # the session is timed once its connection is gone on the SAC's side too
    timed = "sac_push_session_seconds_count"
    await until(lambda: metrics.value(timed, outcome="stored") == 1, "the session timed")
    assert 0 < metrics.value("sac_push_session_seconds_sum", outcome="stored") < 30


@pytest_twisted.ensureDeferred
async def test_a_queued_valve_close_runs_in_the_push_session(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    read = await store.commands.queue(
        m.ldn,
        "read-attribute",
        {"class_id": 1, "obis": "0.0.96.1.10.255", "attribute": 2},
        OPERATOR,
    )
    protocol = await push_once(port, m)
    assert protocol.end_reason.check(ConnectionDone)
    done = await store.commands.get(command.id)
    assert done.state is CommandState.DONE, done.result
    assert "control_state 0" in (done.result or "")
    assert m.valve_state == 0
    pdr = await store.commands.get(read.id)
    assert pdr.state is CommandState.DONE and pdr.result == m.pdr
    meter = await store.meters.get(m.ldn)
    assert meter is not None and meter.valve_state == 0
    ours, _ = await store.counters.last(m.ldn, 1)
    assert ours >= m.sac_counter  # every counter the meter saw was reserved first
