"""Grouped writes of what meters say: the pushes of concurrent sessions go to the store
together (see :class:`IngestWriter`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sac.errors import ReplayError
from sac.store.model import Ingest, IngestResult

if TYPE_CHECKING:
    from sac.services.metrics import Metrics
    from sac.store.readings import IReadings

__all__ = ["IngestStore", "IngestWriter", "count_alarms", "merge"]


def count_alarms(metrics: Metrics, result: IngestResult) -> None:
    """Count the alarm events an ingest stored (``sac_alarms_total{category}``).

    Called once per committed ingest transaction, whichever path made it (a push, a poll,
    a push session's reads, the spool's replay, a group of pushes together): the store
    calls it (``store.readings.observe_ingest``, set by sac.tap), so no path counts twice
    and none is missed.  ``result.alarms`` holds only the events the transaction inserted:
    an event already held (a logbook read twice) or a replayed frame (refused, nothing
    stored) counts nothing."""
    for category, count in result.alarms.items():
        metrics.count("sac_alarms_total", count, category=category)


class IngestStore(Protocol):
    """The part of the store that takes what meters say: its readings."""

    @property
    def readings(self) -> IReadings: ...


class IngestWriter:
    """Group commit: ingests queued while a transaction runs go together in the next.

    Up to ``concurrency`` transactions run at once (the store's pool has the connections):
    while one waits for its commit, the next batch is already on its way.  Each takes its
    rows in one order (by meter), so two of them never deadlock."""

    log = Logger()

    def __init__(self, store: IngestStore, max_batch: int = 256, concurrency: int = 2) -> None:
        self.store = store
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queue: list[tuple[Ingest, Deferred[IngestResult]]] = []
        self._running = 0
        self.transactions = 0

    def write(self, batch: Ingest) -> Deferred[IngestResult]:
        d: Deferred[IngestResult] = Deferred()
        self._queue.append((batch, d))
        if self._running < self.concurrency:
            self._running += 1
            Deferred.fromCoroutine(self._drain())
        return d

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                group = [(b, d) for b, d in group if not d.called]  # timed out meanwhile
                if not group:
                    continue
                if len(group) == 1:
                    await self._one(*group[0])
                    continue
                merged = merge([b for b, _ in group])
                self.transactions += 1
                try:
                    result = await self.store.readings.ingest(merged)
                except ReplayError:
                    for batch, d in group:  # find the stale one(s): each alone
                        await self._one(batch, d)
                    continue
                except Exception as exc:
                    for _, d in group:
                        if not d.called:
                            d.errback(exc)
                    continue
                share = IngestResult(result.readings, result.events, result.pending, result.plans)
                for _, d in group:
                    if not d.called:
                        d.callback(share)
        finally:
            self._running -= 1

    async def _one(self, batch: Ingest, d: Deferred[IngestResult]) -> None:
        self.transactions += 1
        try:
            result = await self.store.readings.ingest(batch)
        except Exception as exc:
            if not d.called:
                d.errback(exc)
            return
        if not d.called:
            d.callback(result)


def merge(parts: list[Ingest]) -> Ingest:
    """Many sessions' (or steps') ingests as one, to store in one transaction."""
    return Ingest(
        readings=[r for p in parts for r in p.readings],
        events=[e for p in parts for e in p.events],
        statuses=[s for p in parts for s in p.statuses],
        counters=[c for p in parts for c in p.counters],
        plan_marks=[m for p in parts for m in p.plan_marks],
    )
