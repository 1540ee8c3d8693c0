"""The production store: PostgreSQL through txpostgres (asynchronous psycopg2, no threads)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg2
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres

from sac.errors import Conflict, StorageError
from sac.keys import MasterKey
from sac.passwords import DEFAULT, ScryptParams
from sac.store.connector import Store, utc_now
from sac.store.sql import (
    Exec,
    InsertRows,
    Query,
    Transaction,
    UpdateRows,
)

__all__ = ["PostgresStore"]

T = TypeVar("T")

# the NOTIFY channel of meter changes; the payload: LDNs separated by commas, or "*"
METERS_CHANNEL = "sac_meters"
_NOTIFY_LDNS = 400  # LDNs in one payload (under PostgreSQL's 8000 bytes); more: "*"


def _reconnection_delays() -> Any:
    """Seconds between attempts to reconnect a dead connection: soon, then every 2 s."""
    return retrying.simpleBackoffIterator(
        initialDelay=0.2, maxDelay=2.0, factor=2.0, maxRetries=0, now=True
    )


class _Pool(txpostgres.ConnectionPool):  # type: ignore[misc]  # txpostgres has no types
    """txpostgres' pool with the reactor given, not imported, and connections that reconnect
    by themselves when the server goes away (a restart, a fail-over): while one is dead its
    transactions fail at once (StorageError), and it comes back when the server does."""

    def __init__(self, reactor: Any, dsn: str, size: int) -> None:
        self.reactor = reactor
        super().__init__(None, dsn, min=size)

    def connectionFactory(self, reactor: Any, cooperator: Any) -> Any:
        detector = reconnection.DeadConnectionDetector(
            reconnectionIterator=_reconnection_delays, reactor=reactor
        )
        return _Connection(reactor, cooperator, detector=detector)


class _Connection(txpostgres.Connection):  # type: ignore[misc]  # txpostgres has no types
    """A connection that loses its server quietly: one warning, then the dead-connection
    detector reconnects it.  txpostgres' own logs an "Unhandled Error" traceback each time
    the server goes away (a restart): from the reactor, when an idle connection's socket
    ends, and from its rollback of a transaction the server has already rolled back.  Here a
    failed transaction is rolled back quietly; its own error is what the caller gets, and
    the detector, which wraps ``_runInteraction``, still sees it."""

    log = Logger()

    def doRead(self) -> Any:
        """An idle connection watches its socket; when the server goes away, polling it
        raises -- psycopg2's error, or, when psycopg2 has let go of the socket but not yet
        marked the connection closed, the reactor's ValueError for a descriptor of -1.
        Returned instead of raised (as psycopg2's error, which the detector knows), it still
        disconnects the connection and the detector reconnects it, without the reactor's
        "Unhandled Error" traceback."""
        try:
            return super().doRead()
        except (psycopg2.Error, ValueError, OSError) as exc:
            return self._lost(exc)

    def doWrite(self) -> Any:
        try:
            return super().doWrite()
        except (psycopg2.Error, ValueError, OSError) as exc:
            return self._lost(exc)

    def _lost(self, exc: Exception) -> psycopg2.Error:
        why = " ".join(str(exc).split())
        self.log.warn("PostgreSQL connection lost: {why}; reconnecting", why=why)
        return exc if isinstance(exc, psycopg2.Error) else psycopg2.OperationalError(why)

    def _runInteraction(
        self, interaction: Any, *args: Any, atomic: bool = True, **kwargs: Any
    ) -> Deferred[Any]:
        if not atomic:  # reads, each statement on its own: no BEGIN and COMMIT to wait for
            return maybeDeferred(interaction, self.cursor(), *args, **kwargs)
        return Deferred.fromCoroutine(self._transaction(interaction, *args, **kwargs))

    async def _transaction(self, interaction: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = self.cursor()
        await cursor.execute("BEGIN")
        try:
            result = await interaction(cursor, *args, **kwargs)
            await cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await cursor.execute("ROLLBACK")
            raise
        return result


def _sql(sql: str) -> str:
    return sql.replace("?", "%s")  # the shared SQL has no literal ? or %


# --- many rows in one statement: one array literal a column, unnest()ed by the server ------
# (psycopg2's asynchronous connections cannot COPY; the arrays are the next best: the text is
# built here in one pass a column, the server parses each array once.  Figures in
# benchmarks/bench_store.py.)

_ARRAY_TYPES = {
    "int": "bigint[]",
    "num": "numeric[]",
    "text": "text[]",
    "time": "timestamptz[]",
    "bytes": "text[]",  # hex text, decoded in the SELECT
}
_ROWS_A_STATEMENT = 5000


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _number(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return repr(value) if isinstance(value, float) else str(int(value))


def _time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"a naive datetime cannot be stored: {value}")
    return _quoted(value.isoformat())


_ELEMENT: dict[str, Callable[[Any], str]] = {
    "int": lambda v: str(int(v)),
    "num": _number,
    "text": _quoted,
    "time": _time,
    "bytes": lambda v: _quoted(bytes(v).hex()),
}


_NONE = type(None)
_PLAIN_NUMBERS = {"int": frozenset((int, _NONE)), "num": frozenset((int, float, _NONE))}


def _array(kind: str, column: Sequence[Any]) -> str:
    """The array literal of ``column``.  The usual columns (ids, a push's values, its OBIS
    codes and times, scalers with NULLs) take the fast paths, joined at C speed: some
    12,000 elements a second's pushes make."""
    if kind in ("text", "time"):  # few distinct values (OBIS codes, a push's times): once each
        element = _ELEMENT[kind]
        texts = {v: element(v) for v in set(column) if v is not None}
        texts[None] = "NULL"
        return "{" + ",".join(map(texts.__getitem__, column)) + "}"
    types = set(map(type, column))
    plain = _PLAIN_NUMBERS.get(kind)
    if plain is not None and types <= plain:
        text = ",".join(map(repr, column))  # (an int's repr is its str; a float's, exact)
        if _NONE in types:
            text = text.replace("None", "NULL")
        if float not in types or "n" not in text:  # (else a NaN or an infinity: spelt below)
            return "{" + text + "}"
    if types == {_NONE}:
        return "{" + ",".join(["NULL"] * len(column)) + "}"
    element = _ELEMENT[kind]
    return "{" + ",".join("NULL" if v is None else element(v) for v in column) + "}"


def _unnest(columns: tuple[tuple[str, str], ...], names: Sequence[str]) -> tuple[str, str]:
    """(``unnest(%s::type[], ...) AS alias(names)``, the select list with bytes decoded)."""
    arrays = ", ".join(f"%s::{_ARRAY_TYPES[kind]}" for _, kind in columns)
    selects = ", ".join(
        f"decode({name}, 'hex')" if kind == "bytes" else name
        for name, (_, kind) in zip(names, columns, strict=True)
    )
    return f"unnest({arrays})", selects


def _chunks(op: InsertRows | UpdateRows) -> Iterator[list[str]]:
    """The array literals of each statement's share of the rows."""
    for i in range(0, len(op.rows), _ROWS_A_STATEMENT):
        columns = zip(*op.rows[i : i + _ROWS_A_STATEMENT], strict=True)
        yield [_array(kind, col) for (_, kind), col in zip(op.columns, columns, strict=True)]


def _insert_rows(op: InsertRows) -> tuple[str, Iterator[list[str]]]:
    names = ", ".join(name for name, _ in op.columns)
    aliases = [f"c{i}" for i in range(len(op.columns))]
    source, selects = _unnest(op.columns, aliases)
    sql = (
        f"INSERT INTO {op.table} ({names}) SELECT {selects} FROM {source}"
        f" AS r({', '.join(aliases)}) ON CONFLICT {op.conflict}"
    )
    if op.returning:
        sql += f" RETURNING {op.returning}"
    return sql, _chunks(op)


def _update_rows(op: UpdateRows) -> tuple[str, Iterator[list[str]]]:
    names = [name for name, _ in op.columns]
    source, selects = _unnest(op.columns, names)
    sql = (
        f"UPDATE {op.table} SET {op.sets} FROM (SELECT {selects} FROM {source}"
        f" AS u({', '.join(names)})) AS v WHERE {op.table}.{op.key} = v.{names[0]}"
    )
    return sql, _chunks(op)


async def _drive(cursor: Any, transaction: Transaction[T]) -> T:
    result: Any = None
    while True:
        try:
            op = transaction.send(result)
        except StopIteration as done:
            value: T = done.value
            return value
        if isinstance(op, InsertRows | UpdateRows):
            returning = isinstance(op, InsertRows) and op.returning
            sql, chunks = _insert_rows(op) if isinstance(op, InsertRows) else _update_rows(op)
            result = [] if returning else 0
            for params in chunks:
                await cursor.execute(sql, params)
                result += cursor.fetchall() if returning else cursor.rowcount
            continue
        sql = _sql(op.sql) + (
            " FOR UPDATE SKIP LOCKED" if isinstance(op, Query) and op.lock else ""
        )
        await cursor.execute(sql, tuple(op.params))
        result = cursor.rowcount if isinstance(op, Exec) else cursor.fetchall()


class _Watcher:
    """The connection that LISTENs for meter changes made by other processes (NOTIFY is
    sent in the changing transaction, so only committed changes arrive).  It reconnects by
    itself; while it was down changes may have been missed, so it then says "every meter"
    (when it goes down and again once it listens again)."""

    log = Logger()

    def __init__(self, reactor: Any, dsn: str, told: Callable[[frozenset[str] | None], None]):
        self.reactor = reactor
        self.dsn = dsn
        self.told = told
        self.listening: Deferred[None] = Deferred()  # fires once LISTEN is in force
        self.connection: _Connection | None = None
        self._closed = False

    async def start(self) -> None:
        detector = _WatchDetector(
            self, reconnectionIterator=_reconnection_delays, reactor=self.reactor
        )
        self.connection = _Connection(self.reactor, None, detector=detector)
        self.connection.addNotifyObserver(self._notified)
        detector.addRecoveryHandler(self._recovered)
        try:
            await self.connection.connect(self.dsn)
            await self.connection.runOperation(f"LISTEN {METERS_CHANNEL}")
        except psycopg2.Error as exc:
            self.log.warn("meter changes of other processes: not listening yet: {e}", e=exc)
            detector.checkForDeadConnection(Failure(exc))
            return
        if not self.listening.called:
            self.listening.callback(None)

    async def _recovered(self) -> None:
        if self._closed or self.connection is None:
            return
        try:
            await self.connection.runOperation(f"LISTEN {METERS_CHANNEL}")
        except (psycopg2.Error, reconnection.ConnectionDead) as exc:  # gone again: reconnecting
            self.log.warn("meter changes of other processes: not listening yet: {e}", e=exc)
            return
        self.log.info("meter changes of other processes: listening again")
        self.told(None)  # what was missed meanwhile
        if not self.listening.called:
            self.listening.callback(None)

    def lost(self) -> None:
        if not self._closed:
            self.told(None)

    def _notified(self, notify: Any) -> None:
        if notify.channel != METERS_CHANNEL:
            return
        payload = notify.payload or "*"
        self.told(None if payload == "*" else frozenset(payload.split(",")))

    def close(self) -> None:
        self._closed = True
        if self.connection is not None:
            detector = self.connection.detector
            detector.reconnectable = None
            with contextlib.suppress(Exception):
                self.connection.close()


class _WatchDetector(reconnection.DeadConnectionDetector):  # type: ignore[misc]  # txpostgres has no types
    def __init__(self, watcher: _Watcher, **kw: Any) -> None:
        super().__init__(**kw)
        self.watcher = watcher

    def startReconnecting(self, f: Any) -> None:
        if self.reconnectable is None:  # closed
            return
        self.watcher.lost()
        super().startReconnecting(f)

    def reconnect(self) -> Any:
        if self.reconnectable is None:
            return None
        return super().reconnect()


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(
        self,
        dsn: str,
        master_key: MasterKey | None,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        connections: int = 4,
        reactor: Any = None,
        password_params: ScryptParams = DEFAULT,
    ) -> None:
        super().__init__(master_key, clock, reactor, password_params)
        self._pool = _Pool(self._reactor, dsn, connections)
        self._dsn = dsn
        self._started = False
        self._watcher: _Watcher | None = None

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        if not self._started:
            try:
                await self._pool.start()
            except psycopg2.Error as exc:
                raise StorageError(f"PostgreSQL: cannot connect: {exc}".strip()) from None
            self._started = True
        return await super().open(upto)

    async def execute(self, transaction: Transaction[T], *, atomic: bool = True) -> T:
        try:
            value: T = await self._pool.runInteraction(
                lambda cursor: Deferred.fromCoroutine(_drive(cursor, transaction)), atomic=atomic
            )
            return value
        except psycopg2.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc}".strip()) from None
        except psycopg2.Error as exc:
            raise StorageError(f"PostgreSQL: {exc}".strip()) from None
        except reconnection.ConnectionDead:
            raise StorageError("PostgreSQL: the connection is down, reconnecting") from None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._started:
            self._pool.close()
            self._started = False

    # --- meter changes through NOTIFY

    def _announce(self, ldns: frozenset[str] | None) -> Transaction[None]:
        many = ldns is None or len(ldns) > _NOTIFY_LDNS or any("," in ldn for ldn in ldns)
        payload = "*" if ldns is None or many else ",".join(sorted(ldns))
        yield Query("SELECT pg_notify(?, ?)", (METERS_CHANNEL, payload))

    def watch_meters(self, watcher: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        stop = super().watch_meters(watcher)
        if self._watcher is None:
            self._watcher = _Watcher(self._reactor, self._dsn, self._meters_changed)
            Deferred.fromCoroutine(self._watcher.start())
        return stop

    async def watching(self) -> None:
        """Once changes made by other processes reach the watchers (LISTEN is in force)."""
        if self._watcher is not None:
            await self._watcher.listening
