"""The store's statements, once for every backend: transactions as generators.

A transaction is a generator that yields :class:`Query` (rows come back) and :class:`Exec`
(the row count comes back) and returns its result.  SQL is written with ``?`` placeholders in
the dialect SQLite and PostgreSQL share (``ON CONFLICT ... DO UPDATE``, ``RETURNING``); each
backend runs the generator inside one database transaction -- SQLite in its thread,
PostgreSQL with awaits -- so the logic is sans-IO, like the codec.

Each entity of the store (:mod:`~sac.store.meters`, :mod:`~sac.store.keys`,
:mod:`~sac.store.commands`...) has a module of such generators and a :class:`Component`
that runs them through its connector (:class:`sac.store.connector.Store`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple

from sac.errors import UnknownMeter
from sac.keys import MasterKey

__all__ = [
    "BATCH_ROWS",
    "Component",
    "Connection",
    "Exec",
    "InsertRows",
    "Query",
    "Statement",
    "Transaction",
    "UpdateRows",
    "id_of",
    "ids_of",
    "number",
    "ping",
    "stamp",
    "when",
]


@dataclass(frozen=True, slots=True)
class Query:
    """A statement whose rows come back.  ``lock``: lock the rows selected against other
    transactions, skipping those already locked (PostgreSQL's ``FOR UPDATE SKIP LOCKED``;
    SQLite's writers are serialised by ``BEGIN IMMEDIATE`` already)."""

    sql: str
    params: Sequence[Any] = ()
    lock: bool = False


@dataclass(frozen=True, slots=True)
class Exec:
    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class InsertRows:
    """Insert many rows into ``table``, skipping those a unique index says are held already;
    the number inserted comes back.  ``columns`` pairs each name with its kind (``int``,
    ``num``, ``text``, ``time``, ``bytes``) so that each backend takes its fastest path:
    ``executemany`` in SQLite, one ``INSERT ... SELECT FROM unnest(arrays)`` in PostgreSQL."""

    table: str
    columns: tuple[tuple[str, str], ...]
    rows: Sequence[tuple[Any, ...]]
    conflict: str = "DO NOTHING"  # what follows ON CONFLICT
    returning: str | None = None  # with it, the rows RETURNING gives come back, not a count


@dataclass(frozen=True, slots=True)
class UpdateRows:
    """Update many rows of ``table`` at once, each from one row of values: ``sets`` is the
    SET clause, where ``v.<column>`` is the row's value and ``<table>.<column>`` the row's
    current one (qualify both: the names overlap).  ``columns`` as for :class:`InsertRows`;
    the first is matched with ``<table>.<key>``.  PostgreSQL runs one ``UPDATE ... FROM
    unnest(arrays)``, SQLite one ``UPDATE ... FROM (SELECT ? AS ...)`` a row."""

    table: str
    key: str
    columns: tuple[tuple[str, str], ...]
    rows: Sequence[tuple[Any, ...]]
    sets: str


T = TypeVar("T")
Ts = TypeVarTuple("Ts")

Statement = Query | Exec | InsertRows | UpdateRows

#: a transaction whose result is a ``T``: what its ``return`` gives, and what running it gives
#: (the rows or row counts sent back into it are the backend's, untyped)
Transaction = Generator[Statement, Any, T]


# rows (or LDNs) per statement: 10 parameters a reading, well under SQLite's 32766 and
# PostgreSQL's 65535
BATCH_ROWS = 500


def when(value: Any) -> dt.datetime | None:
    """A timestamp as either backend returns it (ISO text from SQLite)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def stamp(value: Any) -> dt.datetime:
    """A timestamp of a NOT NULL column, as either backend returns it."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def number(value: Any) -> int | float | None:
    """A stored number the same on every backend: an int when whole, else a float
    (SQLite may give a float for a whole number, PostgreSQL a Decimal for anything)."""
    if value is None or isinstance(value, int):
        return value
    if value == int(value):
        return int(value)
    return float(value)


def ids_of(ldns: set[str]) -> Transaction[dict[str, int]]:
    """{LDN: id} of the meters present among ``ldns``, a few hundred a query."""
    wanted = sorted(ldns)
    ids: dict[str, int] = {}
    for i in range(0, len(wanted), BATCH_ROWS):
        part = wanted[i : i + BATCH_ROWS]
        rows = yield Query(
            f"SELECT ldn, id FROM meters WHERE ldn IN ({', '.join('?' * len(part))})", part
        )
        ids.update(rows)
    return ids


def id_of(ldn: str) -> Transaction[int]:
    rows = yield Query("SELECT id FROM meters WHERE ldn = ?", (ldn,))
    if not rows:
        raise UnknownMeter(ldn)
    return int(rows[0][0])


def ping() -> Transaction[bool]:
    """A round trip to the database, for health checks."""
    rows = yield Query("SELECT 1", [])
    return bool(rows[0][0] == 1)


# --- components ---------------------------------------------------------------------------


class Connection(Protocol):
    """What a component asks of its connector: run transactions, and the store's clock, keys
    and threads."""

    #: {LDN: meter id}, the ingest path's cache (forgotten with each change of meters)
    meter_ids: dict[str, int]
    #: how many changes of meters were told so far (a lookup spanning one may be stale)
    meter_changes: int

    def run(self, transaction: Transaction[T], *, atomic: bool = True) -> Awaitable[T]:
        """Run ``transaction`` in one database transaction; its result.  ``atomic=False``:
        a transaction that only reads, its statements each on its own."""

    def change(self, transaction: Transaction[T], ldns: Collection[str] | None) -> Awaitable[T]:
        """Run a transaction that changes the meters ``ldns`` (None: any) or their keys;
        whoever caches them is told."""

    def now(self) -> dt.datetime:
        """The store's clock."""

    def master_key(self) -> MasterKey:
        """The key that wraps meter keys; ConfigurationError without one."""

    def master_key_if_set(self) -> MasterKey | None:
        """The key that wraps meter keys, if there is one."""

    def set_master_key(self, new: MasterKey) -> None:
        """The key that wraps meter keys from now on."""

    def in_thread(self, f: Callable[[*Ts], T], *args: *Ts) -> Awaitable[T]:
        """CPU-bound work off the reactor thread."""


class Component:
    """One entity of the store (Buildbot's connector components have this shape): its
    methods build transactions and run them through ``db``, the connector."""

    def __init__(self, db: Connection) -> None:
        self.db = db
