"""Command housekeeping: pending commands past their deadline expire, and commands a dead
process claimed go back to the queue."""

from __future__ import annotations

import datetime as dt
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sac.errors import SacError
from sac.services.commands import CommandStore

__all__ = ["Housekeeping", "Periodic"]


class Periodic(Service):
    """A service that runs its :meth:`run` every ``every`` seconds on ``reactor`` (at once
    when it starts); a subclass says what ``run`` does and logs its own failures."""

    def __init__(self, *, reactor: Any, every: float) -> None:
        self.reactor = reactor
        self.every = every
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.run()))
        self._loop.clock = self.reactor
        self._loop.start(self.every, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def run(self) -> Any:
        raise NotImplementedError


class Housekeeping(Periodic):
    """Every ``every`` seconds: pending commands past their deadline become expired, and
    commands claimed by a session that never finished them (its process died) go back to
    the queue once ``stale_after`` has passed (longer than any session may last, so a live
    session of another process is never robbed)."""

    log = Logger()

    def __init__(
        self, store: CommandStore, *, reactor: Any, every: float = 60.0, stale_after: float = 600.0
    ) -> None:
        super().__init__(reactor=reactor, every=every)
        self.store = store
        self.stale_after = dt.timedelta(seconds=stale_after)

    async def run(self) -> tuple[int, int]:
        try:
            expired = await self.store.commands.expire()
            requeued = await self.store.commands.requeue_stale(self.stale_after)
        except SacError as exc:
            self.log.warn("command housekeeping failed: {e}", e=exc)
            return 0, 0
        if expired or requeued:
            self.log.info("commands: {e} expired, {r} requeued", e=expired, r=requeued)
        return expired, requeued
