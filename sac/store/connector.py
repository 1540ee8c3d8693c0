"""The store: one connector holding a component per entity (``store.meters``,
``store.keys``, ``store.counters``, ``store.readings``, ``store.events``, ``store.commands``,
``store.users``, ``store.sessions``, ``store.tokens``, ``store.audit``, ``store.exports``,
``store.connections``, ``store.jobs``),
each with its narrow interface next to it; a backend (SQLite, PostgreSQL) provides one
method, :meth:`Store.run`: run a transaction generator."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar, TypeVarTuple

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from sac import passwords
from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.passwords import ScryptParams
from sac.store import schema
from sac.store.audit import AuditComponent
from sac.store.commands import CommandsComponent
from sac.store.connections import ConnectionsComponent
from sac.store.counters import CountersComponent
from sac.store.events import EventsComponent
from sac.store.exports import ExportsComponent
from sac.store.jobs import JobsComponent
from sac.store.keys import KeysComponent, check_master_key
from sac.store.meters import MetersComponent
from sac.store.readings import ReadingsComponent
from sac.store.sql import Transaction, ping
from sac.store.tokens import TokensComponent
from sac.store.users import SessionsComponent, UsersComponent

__all__ = ["IStore", "Store", "utc_now"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_log = Logger()


class IStore(Interface):
    """The SAC's memory: its components, and what concerns the whole database."""

    meters = Attribute(":class:`sac.store.meters.IMeters`")
    keys = Attribute(":class:`sac.store.keys.IKeys`")
    counters = Attribute(":class:`sac.store.counters.ICounters`")
    readings = Attribute(":class:`sac.store.readings.IReadings`")
    events = Attribute(":class:`sac.store.events.IEvents`")
    commands = Attribute(":class:`sac.store.commands.ICommands`")
    users = Attribute(":class:`sac.store.users.IUsers`")
    sessions = Attribute(":class:`sac.store.users.ISessions`")
    tokens = Attribute(":class:`sac.store.tokens.ITokens`")
    audit = Attribute(":class:`sac.store.audit.IAudit`")
    exports = Attribute(":class:`sac.store.exports.IExports`")
    connections = Attribute(":class:`sac.store.connections.IConnections`")
    jobs = Attribute(":class:`sac.store.jobs.IJobs`")

    async def open(upto: int | None = None) -> tuple[int, int]:
        """Apply the migrations (up to version ``upto``: for upgrade tests) and check the
        master key; (schema version found, version now)."""

    async def close() -> None:
        """Release the connections."""

    async def ping() -> bool:
        """One round trip to the database (health checks); StorageError when it fails."""

    def watch_meters(watcher: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        """Call ``watcher`` with the LDNs of the meters whose row or keys a committed change
        touched (None: possibly any meter): in this process as soon as the change returns,
        and on PostgreSQL, in every other process on the database within moments (LISTEN/
        NOTIFY).  The call that stops watching."""

    async def watching() -> None:
        """Fires once changes made by other processes reach the watchers (on PostgreSQL,
        once LISTEN is in force; at once on SQLite)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@implementer(IStore)
class Store:
    """The connector: the components, and what they ask of it (:class:`sac.store.sql.
    Connection`) on top of :meth:`run`, which a backend provides."""

    dialect = ""

    def __init__(
        self,
        master_key: MasterKey | None,
        clock: Callable[[], dt.datetime] = utc_now,
        reactor: Any = None,
        password_params: ScryptParams = passwords.DEFAULT,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._master = master_key
        self._clock = clock
        self._reactor = reactor
        # {LDN: meter id} for the ingest path (a meter deleted and added again is renumbered:
        # its entry goes with the change, see _meters_changed)
        self.meter_ids: dict[str, int] = {}
        self.meter_changes = 0  # changes told (a lookup that spans one may have read before)
        self._watchers: list[Callable[[frozenset[str] | None], None]] = []
        self.meters = MetersComponent(self)
        self.keys = KeysComponent(self)
        self.counters = CountersComponent(self)
        self.readings = ReadingsComponent(self)
        self.events = EventsComponent(self)
        self.commands = CommandsComponent(self)
        self.users = UsersComponent(self, password_params)
        self.sessions = SessionsComponent(self)
        self.tokens = TokensComponent(self)
        self.audit = AuditComponent(self)
        self.exports = ExportsComponent(self)
        self.connections = ConnectionsComponent(self)
        self.jobs = JobsComponent(self)

    # told each transaction's name (its generator function's) and duration in seconds, when
    # set (sac.tap: the histogram sac_store_seconds)
    observe: Callable[[str, float], None] | None = None

    async def run(self, transaction: Transaction[T], *, atomic: bool = True) -> T:
        """Run ``transaction`` in one database transaction (:meth:`execute`), timed.
        ``atomic=False``: statements that only read, each on its own (PostgreSQL: no
        BEGIN and COMMIT, two round trips fewer; SQLite: no write lock taken)."""
        if self.observe is None:
            return await self.execute(transaction, atomic=atomic)
        began = time.monotonic()
        try:
            return await self.execute(transaction, atomic=atomic)
        finally:
            self.observe(getattr(transaction, "__name__", "?"), time.monotonic() - began)

    async def execute(self, transaction: Transaction[T], *, atomic: bool = True) -> T:
        raise NotImplementedError("a backend runs transactions")

    def now(self) -> dt.datetime:
        return self._clock()

    def in_thread(self, f: Callable[[*Ts], T], *args: *Ts) -> Deferred[T]:
        """CPU-bound work (scrypt) off the reactor thread."""
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def master_key(self) -> MasterKey:
        if self._master is None:
            raise ConfigurationError(
                "meter keys need a master key (SAC_MASTER_KEY or [store] master_key_file)"
            )
        return self._master

    def master_key_if_set(self) -> MasterKey | None:
        return self._master

    def set_master_key(self, new: MasterKey) -> None:
        self._master = new

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        migrations = schema.load_migrations(self.dialect)[:upto]
        versions = await self.run(schema.migrate(migrations, self._clock(), self.dialect))
        await self.run(check_master_key(self._master))
        return versions

    async def close(self) -> None:
        raise NotImplementedError("a backend closes its connections")

    async def ping(self) -> bool:
        return bool(await self.run(ping()))

    # --- changes of meters and keys, told to whoever caches them (the push path)

    def watch_meters(self, watcher: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        self._watchers.append(watcher)

        def stop() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return stop

    async def watching(self) -> None:
        """Once changes made elsewhere reach the watchers (SQLite: one process, at once)."""

    def _meters_changed(self, ldns: frozenset[str] | None) -> None:
        """Tell this process's watchers (and forget the meter ids of ``ldns``)."""
        self.meter_changes += 1
        if ldns is None:
            self.meter_ids.clear()
        else:
            for ldn in ldns:
                self.meter_ids.pop(ldn, None)
        for watcher in list(self._watchers):
            try:
                watcher(ldns)
            except Exception:
                _log.failure("a watcher of meter changes failed")

    def _announce(self, ldns: frozenset[str] | None) -> Transaction[None]:
        """Statements that tell the other processes, run in the changing transaction (so
        they hear of it only if it commits).  SQLite: one process, nothing to tell."""
        return
        yield  # a generator

    def _announced(self, change: Transaction[T], ldns: frozenset[str] | None) -> Transaction[T]:
        result = yield from change
        yield from self._announce(ldns)
        return result

    async def change(self, change: Transaction[T], ldns: Collection[str] | None) -> T:
        """Run a transaction that changes meters or their keys: the other processes are
        told in it, this one's watchers once it has returned (or failed: a commit whose
        answer was lost is a change too; forgetting once too often costs one lookup)."""
        changed = frozenset(ldns) if ldns is not None else None
        try:
            return await self.run(self._announced(change, changed))
        finally:
            self._meters_changed(changed)
