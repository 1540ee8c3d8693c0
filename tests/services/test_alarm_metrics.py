"""``sac_alarms_total{category}``: the alarm events each ingest newly stored, counted once
whichever path stored them (the store tells its observer, as sac.tap wires it); an event
stored again or a replayed frame counts nothing."""

from __future__ import annotations

import functools

import pytest
import pytest_twisted

from sac.errors import ReplayError
from sac.services.ingest import IngestWriter, count_alarms
from sac.services.metrics import Metrics
from sac.store import Ingest, PeerCounter
from tests.store.conftest import Backend, backend, postgres  # noqa: F401 -- fixtures
from tests.store.test_alarms import event
from tests.store.test_operations import ldn, opened


@pytest_twisted.ensureDeferred
async def test_new_alarms_are_counted_once_by_category(backend: Backend) -> None:  # noqa: F811
    store = await opened(backend, meters=2)
    metrics = Metrics(process=False)
    store.readings.observe_ingest = functools.partial(count_alarms, metrics)
    pushed = Ingest(events=[event(0, 80, 1), event(0, 12, 2)], counters=[PeerCounter(ldn(0), 1, 5)])
    await store.readings.ingest(pushed)
    assert metrics.value("sac_alarms_total", category="tamper") == 1
    with pytest.raises(ReplayError):  # the same frame again: refused, nothing stored
        await store.readings.ingest(pushed)
    await store.readings.ingest(Ingest(events=[event(0, 80, 1)]))  # a logbook read twice
    assert metrics.total("sac_alarms_total") == 1
    # pushes grouped in one transaction by the writer: each alarm once
    writer = IngestWriter(store)
    results = [writer.write(Ingest(events=[event(i, 94, 3), event(i, 102, 4)])) for i in range(2)]
    for d in results:
        await d
    assert metrics.value("sac_alarms_total", category="battery") == 2
    assert metrics.value("sac_alarms_total", category="valve") == 2
    assert metrics.total("sac_alarms_total") == 5
    assert b'sac_alarms_total{category="tamper"} 1.0' in metrics.render()
