"""Grouped calls to the store: the pushes of concurrent sessions go to the store together
(:class:`IngestWriter`), and so do their lookups (:class:`Grouped`, the base of both; the
meters and keys of pushes: :class:`sac.services.directory.MeterDirectory`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sac.errors import ReplayError
from sac.store.model import Ingest, IngestResult

if TYPE_CHECKING:
    from sac.services.metrics import Metrics
    from sac.store.readings import IReadings

__all__ = ["Grouped", "IngestStore", "IngestWriter", "count_alarms", "merge"]

T = TypeVar("T")
R = TypeVar("R")


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


class Grouped(Generic[T, R]):
    """Calls grouped: those made while one group runs go together in the next (a group
    commit, a grouped lookup).  Up to ``concurrency`` groups run at once (the store's pool
    has the connections): while one waits for its answer, the next is already on its way.
    An idle caller waits for nobody: a lone call runs at once, as a group of one.

    A subclass gives :meth:`run_group`, which answers every call of its group (each one's
    Deferred fired once; a call answered already -- timed out meanwhile -- is left)."""

    log = Logger()

    def __init__(self, max_batch: int = 256, concurrency: int = 2) -> None:
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queue: list[tuple[T, Deferred[R]]] = []
        self._running = 0
        self.groups = 0  # groups run: the transactions (or queries) of the grouped calls

    def __call__(self, item: T) -> Deferred[R]:
        d: Deferred[R] = Deferred()
        self._queue.append((item, d))
        if self._running < self.concurrency:
            self._running += 1
            Deferred.fromCoroutine(self._drain())
        return d

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                group = [(item, d) for item, d in group if not d.called]  # timed out meanwhile
                if group:
                    self.groups += 1
                    try:
                        await self.run_group(group)
                    except Exception as exc:  # (run_group's own failure: each call is told)
                        _fail(group, exc)
        finally:
            self._running -= 1

    async def run_group(self, group: list[tuple[T, Deferred[R]]]) -> None:
        raise NotImplementedError


def _fail(group: Sequence[tuple[Any, Deferred[Any]]], exc: BaseException) -> None:
    for _, d in group:
        if not d.called:
            d.errback(exc)


def _answer(d: Deferred[R], result: R) -> None:
    if not d.called:
        d.callback(result)


class IngestWriter(Grouped[Ingest, IngestResult]):
    """Group commit: ingests queued while a transaction runs go together in the next, one
    transaction for all.  Each takes its rows in one order (by meter), so two of them never
    deadlock; a group the store refuses for a replayed counter is retried one ingest at a
    time, so one stale push does not sink the others."""

    def __init__(self, store: IngestStore, max_batch: int = 256, concurrency: int = 2) -> None:
        super().__init__(max_batch, concurrency)
        self.store = store

    @property
    def transactions(self) -> int:
        return self.groups

    def write(self, batch: Ingest) -> Deferred[IngestResult]:
        return self(batch)

    async def run_group(self, group: list[tuple[Ingest, Deferred[IngestResult]]]) -> None:
        if len(group) == 1:
            await self._one(*group[0])
            return
        try:
            result = await self.store.readings.ingest(merge([b for b, _ in group]))
        except ReplayError:
            for batch, d in group:  # find the stale one(s): each alone
                self.groups += 1
                await self._one(batch, d)
            return
        share = IngestResult(result.readings, result.events, result.pending, result.plans)
        for _, d in group:
            _answer(d, share)

    async def _one(self, batch: Ingest, d: Deferred[IngestResult]) -> None:
        try:
            result = await self.store.readings.ingest(batch)
        except Exception as exc:
            _fail([(batch, d)], exc)
            return
        _answer(d, result)


def merge(parts: list[Ingest]) -> Ingest:
    """Many sessions' (or steps') ingests as one, to store in one transaction."""
    return Ingest(
        readings=[r for p in parts for r in p.readings],
        events=[e for p in parts for e in p.events],
        statuses=[s for p in parts for s in p.statuses],
        counters=[c for p in parts for c in p.counters],
        plan_marks=[m for p in parts for m in p.plan_marks],
    )
