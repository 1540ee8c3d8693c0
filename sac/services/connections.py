"""The connections' record: a row a session with a meter (a push, a poll), written off the
sessions' path, and forgotten after ``[store] keep_connections_days``.

The push path stores thousands of sessions a second with grouped commits
(:class:`sac.services.ingest.IngestWriter`): a transaction a session for its record would
halve that.  So a session's end only hands its :class:`~sac.store.Connection` to the
:class:`ConnectionLog`, which stores what it gathered every ``every`` seconds (or at
``batch`` rows) in one transaction, one at a time.  A failure to store them is logged (once
while it lasts) and counted in ``sac_connections_lost_total``, never a session's failure;
so is a record beyond ``most`` waiting (the store too slow for long)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sac.errors import SacError
from sac.runtime import wait_at_most
from sac.services.housekeeping import Periodic
from sac.services.metrics import Metrics
from sac.store import Connection

if TYPE_CHECKING:
    from sac.store.connections import IConnections

__all__ = ["ConnectionLog", "ConnectionPruning", "ConnectionStore"]


class ConnectionStore(Protocol):
    """The part of the store that keeps the connections."""

    @property
    def connections(self) -> IConnections: ...


class ConnectionLog:
    """Gathers the sessions' records and stores them together (see the module)."""

    log = Logger()

    def __init__(
        self,
        store: ConnectionStore,
        *,
        reactor: Any,
        metrics: Metrics | None = None,
        every: float = 0.1,
        batch: int = 2000,
        most: int = 100_000,
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else Metrics()
        self.every = every
        self.batch = batch
        self.most = most
        self._pending: list[Connection] = []
        self._timer: Any = None
        self._writing: Deferred[None] | None = None
        self._lost = 0  # since the last failure was logged
        self._refused = False  # the last write failed
        self.transactions = 0

    def record(self, connection: Connection) -> None:
        """Keep ``connection`` for the next write (at once on the reactor: never waits)."""
        if len(self._pending) >= self.most:
            self._lose(1)
            return
        self._pending.append(connection)
        if len(self._pending) >= self.batch:
            self._write()
        elif self._timer is None and self._writing is None:
            self._timer = self.reactor.callLater(self.every, self._write)

    def _write(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._writing is None and self._pending:
            writing = Deferred.fromCoroutine(self._drain())
            if not writing.called:  # (a store that fails at once has finished it already)
                self._writing = writing

    async def _drain(self) -> None:
        try:
            while self._pending:
                rows, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                self.transactions += 1
                try:
                    await self.store.connections.add(rows)
                except Exception as exc:
                    self._failed(exc, len(rows))
                    break
                if self._lost:
                    self.log.info("connections recorded again ({n} lost)", n=self._lost)
                    self._lost = 0
                if len(self._pending) < self.batch:
                    break  # the rest with the next timer: gathered, not a transaction each
        finally:
            self._writing = None
            if self._pending and self._timer is None:
                self._timer = self.reactor.callLater(self.every, self._write)

    def _failed(self, exc: Exception, rows: int) -> None:
        if not self._lost:
            level = self.log.warn if isinstance(exc, SacError) else self.log.error
            level("connections not recorded ({n} lost): {e}", n=rows, e=exc or type(exc).__name__)
        self._lose(rows)

    def _lose(self, rows: int) -> None:
        self._lost += rows
        self.metrics.count("sac_connections_lost_total", rows)

    async def flush(self, within: float = 10.0) -> None:
        """Store what waits (at a stop, once the sessions have ended), for at most
        ``within`` seconds (a store away never holds a stop up): what is not stored by then
        is lost, and counted."""
        deadline = self.reactor.seconds() + within
        self._refused = False  # tried once more, whatever happened before
        while self._pending or self._writing is not None:
            left = deadline - self.reactor.seconds()
            if left <= 0 or (self._refused and self._writing is None):
                break  # out of time, or the store refuses: do not spin on it
            self._write()
            if self._writing is not None:
                await wait_at_most([self._writing], left, self.reactor)
        if self._pending:
            self._lose(len(self._pending))
            self._pending.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class ConnectionPruning(Periodic):
    """Every ``every`` seconds, the connections started more than ``keep`` ago are
    forgotten (in short transactions: :meth:`sac.store.connections.IConnections.prune`)."""

    log = Logger()

    def __init__(
        self, store: ConnectionStore, keep: dt.timedelta, *, reactor: Any, every: float = 3600.0
    ) -> None:
        super().__init__(reactor=reactor, every=every)
        self.store = store
        self.keep = keep

    async def run(self) -> int:
        try:
            pruned = await self.store.connections.prune(self.keep)
        except SacError as exc:
            self.log.warn("connections not pruned: {e}", e=exc)
            return 0
        if pruned:
            self.log.info(
                "connections: {n} older than {d} days forgotten", n=pruned, d=self.keep.days
            )
        return pruned
