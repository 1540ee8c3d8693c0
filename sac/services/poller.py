"""The poll scheduler: meters that listen are dialled on their interval, a bounded number at
a time, with retries after a growing delay when a poll fails.

The schedule lives in the store (each meter's ``next_poll``), claimed with ``FOR UPDATE SKIP
LOCKED`` and a lease: several SAC processes on one PostgreSQL share the work, and a poll
whose process died is due again when its lease ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sac.errors import SacError
from sac.profiles import ProfileRegistry
from sac.runtime import wait_at_most
from sac.services.connections import ConnectionLog
from sac.services.metrics import Metrics
from sac.services.poll import PollFailed, PollResult, PollStore, poll_meter
from sac.services.session import SessionSettings
from sac.store import Connection
from sac.store.model import PollJob

__all__ = ["PollSettings", "Poller"]


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval: int = 86_400  # seconds between polls of a meter (its own interval wins)
    concurrency: int = 50  # polls at once, this process
    connect_timeout: float = 10.0
    response_timeout: float = 10.0
    session_budget: float = 120.0
    retry_first: float = 60.0  # the delay after a first failure; doubled each time
    tick: float = 1.0  # how often the schedule is looked at


class Poller(Service):
    log = Logger()

    def __init__(
        self,
        store: PollStore,
        registry: ProfileRegistry,
        *,
        reactor: Any,
        settings: PollSettings = PollSettings(),
        session: SessionSettings = SessionSettings(),  # noqa: B008 -- frozen, shared
        metrics: Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        connections: ConnectionLog | None = None,
    ) -> None:
        self.store = store
        self.connections = connections  # where each poll's record goes (None: nowhere)
        self.registry = registry
        self.reactor = reactor
        self.settings = settings
        self.session = session
        self.metrics = metrics if metrics is not None else Metrics()
        self.now = now
        self.running_polls: dict[str, Deferred[Any]] = {}
        self._loop: LoopingCall | None = None
        self._ticking = False
        self.metrics.gauge("sac_polls_running", lambda: len(self.running_polls))

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.settings.tick, now=True).addErrback(
            lambda f: self.log.failure("the poll scheduler stopped", f)
        )

    async def stop(self, grace: float = 0.0) -> int:
        """No new polls; those running get ``grace`` seconds to finish, then are cut and
        handed back: due again at once, for this process after a restart or another one.
        The number cut."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if grace > 0:
            await wait_at_most(list(self.running_polls.values()), grace, self.reactor)
        left = list(self.running_polls.values())
        for d in left:
            d.cancel()
        if left:
            await DeferredList(left, consumeErrors=True)
        return len(left)

    def stopService(self) -> Deferred[int]:
        super().stopService()
        return Deferred.fromCoroutine(self.stop())

    def tick(self) -> Deferred[None] | None:
        """Start the polls that are due, up to the concurrency limit."""
        if self._ticking:
            return None
        room = self.settings.concurrency - len(self.running_polls)
        if room <= 0:
            return None
        self._ticking = True
        return Deferred.fromCoroutine(self._claim(room))

    async def _claim(self, room: int) -> None:
        lease = dt.timedelta(
            seconds=self.settings.connect_timeout + self.settings.session_budget + 60
        )
        try:
            jobs = await self.store.meters.claim_polls(room, lease)
        except SacError as exc:
            self.log.warn("polls not claimed: {e}", e=exc)
            return
        finally:
            self._ticking = False
        for job in jobs:
            d = Deferred.fromCoroutine(self.run(job))
            self.running_polls[job.ldn] = d
            d.addBoth(self._done, job.ldn)

    def _done(self, result: Any, ldn: str) -> None:
        self.running_polls.pop(ldn, None)

    async def run(self, job: PollJob) -> PollResult | None:
        """One poll, and when the next one is due."""
        interval = job.interval or self.settings.interval
        started, began = self.reactor.seconds(), self.now()
        try:
            result = await self._poll(job)
        except CancelledError:
            self.log.info("poll of {ldn}: cut by a stop, due again", ldn=job.ldn)
            self._record(job, began, started, "stopping", detail="the SAC is stopping")
            await self._reschedule(job.ldn, 0, job.failures)
            raise
        except (PollFailed, SacError) as exc:
            got = getattr(exc, "read", ()), getattr(exc, "skipped", ())
            self._record(job, began, started, "failed", *got, str(exc))
            failures = job.failures + 1
            delay = min(interval, self.settings.retry_first * 2 ** (failures - 1))
            self.metrics.count("sac_polls_total", outcome="failed")
            self.log.warn(
                "poll session of {ldn}: failed in {ms} ms ({n} in a row; next in {d:.0f} s): {e}",
                ldn=job.ldn,
                ms=round((self.reactor.seconds() - started) * 1000),
                outcome="failed",
                n=failures,
                d=delay,
                e=exc,
            )
            await self._reschedule(job.ldn, delay, failures)
            return None
        self._polled(job, result, started)
        outcome = "partial" if result.skipped else "done"
        self._record(job, began, started, outcome, result.read, result.skipped)
        await self._reschedule(job.ldn, interval, 0)
        return result

    async def _poll(self, job: PollJob) -> PollResult:
        return await poll_meter(
            job.ldn,
            job.address,
            store=self.store,
            registry=self.registry,
            reactor=self.reactor,
            settings=self.session,
            connect_timeout=self.settings.connect_timeout,
            response_timeout=self.settings.response_timeout,
            session_budget=self.settings.session_budget,
            now=self.now,
        )

    def _polled(self, job: PollJob, result: PollResult, started: float) -> None:
        """A poll that completed: counted and logged."""
        outcome = "partial" if result.skipped else "done"
        self.metrics.count("sac_polls_total", outcome=outcome)
        self.log.info(
            "poll session of {ldn}: {outcome} in {ms} ms, {r} readings, {e} events,"
            " {c} commands{not_read}",
            ldn=job.ldn,
            ms=round((self.reactor.seconds() - started) * 1000),
            outcome=outcome,
            r=result.readings,
            e=result.events,
            c=result.commands,
            not_read=f"; not read: {'; '.join(result.skipped)}" if result.skipped else "",
        )

    def _record(
        self,
        job: PollJob,
        began: dt.datetime,
        started: float,
        outcome: str,
        read: tuple[str, ...] = (),
        skipped: tuple[str, ...] = (),
        detail: str | None = None,
    ) -> None:
        """The poll's record, to the connections' log (gathered, stored later)."""
        if self.connections is None:
            return
        ms = round((self.reactor.seconds() - started) * 1000)
        self.connections.record(
            Connection(job.ldn, began, job.address, "poll", outcome, ms, read, skipped, detail)
        )

    async def _reschedule(self, ldn: str, delay: float, failures: int) -> None:
        try:
            await self.store.meters.finish_poll(
                ldn, self.now() + dt.timedelta(seconds=delay), failures
            )
        except SacError as exc:
            self.log.warn("poll of {ldn}: next one not recorded: {e}", ldn=ldn, e=exc)
