"""The embedded default store: SQLite through a one-connection adbapi pool.

One connection and one thread: SQLite serialises writers anyway, and one connection keeps
the transactions of the reactor's callers in order.  WAL with synchronous=FULL: a transaction
the caller has seen committed survives a kill -9 of the process and a power cut (NORMAL would
survive the first only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.enterprise import adbapi

from sac.errors import Conflict, StorageError
from sac.keys import MasterKey
from sac.passwords import DEFAULT, ScryptParams
from sac.store.connector import Store, utc_now
from sac.store.sql import Exec, InsertRows, Transaction, UpdateRows

__all__ = ["SQLiteStore"]

T = TypeVar("T")


def _configure(connection: sqlite3.Connection) -> None:
    """Runs in the pool's thread when the connection opens."""
    connection.execute("PRAGMA busy_timeout = 5000")
    # switching a new file to WAL answers "locked" at once, without waiting, while another
    # process opening it holds the lock: try again for up to 5 s (a thread, not the reactor)
    for attempt in range(100):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)  # off-reactor: adbapi runs cp_openfun in its connection thread
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    if sqlite3.sqlite_version_info < (3, 38):  # unixepoch() is built in from 3.38
        connection.create_function("unixepoch", 1, _unixepoch, deterministic=True)


def _unixepoch(text: str | None) -> int | None:
    """SQLite's unixepoch() of a stored time, for libraries older than 3.38."""
    return None if text is None else int(dt.datetime.fromisoformat(text).timestamp())


def _adapt(params: Any) -> tuple[Any, ...]:
    return tuple(_text_time(p) if isinstance(p, dt.datetime) else p for p in params)


def _text_time(value: dt.datetime) -> str:
    """A timestamp as SQLite text: UTC, to the microsecond, one width, so that text order is
    time order (the store compares them in SQL)."""
    if value.tzinfo is None:
        raise ValueError(f"a naive datetime cannot be stored: {value}")
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def thd_run(connection: Any, transaction: Transaction[T], atomic: bool = True) -> T:
    """Run a transaction generator in the pool's thread, in one SQLite transaction (one
    that takes the write lock at once, unless ``atomic`` is False: a read, which takes none)."""
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE" if atomic else "BEGIN")
    try:
        result: Any = None
        while True:
            try:
                op = transaction.send(result)
            except StopIteration as done:
                cursor.execute("COMMIT")
                value: T = done.value
                return value
            if isinstance(op, InsertRows):
                result = _insert_rows(cursor, op)
                continue
            if isinstance(op, UpdateRows):
                result = _update_rows(cursor, op)
                continue
            cursor.execute(op.sql, _adapt(op.params))
            result = cursor.rowcount if isinstance(op, Exec) else cursor.fetchall()
    except BaseException as exc:
        cursor.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise Conflict(f"the store refused a write: {exc}") from None
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"SQLite: {exc}") from None
        raise


def _insert_rows(cursor: sqlite3.Cursor, op: InsertRows) -> Any:
    names = ", ".join(name for name, _ in op.columns)
    marks = ", ".join("?" * len(op.columns))
    sql = f"INSERT INTO {op.table} ({names}) VALUES ({marks}) ON CONFLICT {op.conflict}"
    if op.returning:  # executemany cannot return rows
        sql += f" RETURNING {op.returning}"
        return [row for values in op.rows for row in cursor.execute(sql, _adapt(values))]
    if not op.rows:
        return 0
    cursor.executemany(sql, map(_adapt, op.rows))
    return cursor.rowcount  # summed over the rows by executemany


def _update_rows(cursor: sqlite3.Cursor, op: UpdateRows) -> int:
    if not op.rows:
        return 0
    names = [name for name, _ in op.columns]
    values = ", ".join(f"? AS {name}" for name in names)
    cursor.executemany(
        f"UPDATE {op.table} SET {op.sets} FROM (SELECT {values}) AS v"
        f" WHERE {op.table}.{op.key} = v.{names[0]}",
        map(_adapt, op.rows),
    )
    return cursor.rowcount


def _create_private(path: Path) -> None:
    """A new database file readable by this user only (0600, whatever the umask): it holds
    users' password hashes and the wrapped keys.  SQLite gives its -wal and -shm files the
    database file's permissions."""
    if str(path) == ":memory:" or not path.parent.is_dir():
        return  # (open() says the folder is missing)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        master_key: MasterKey | None,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        reactor: Any = None,
        password_params: ScryptParams = DEFAULT,
    ) -> None:
        super().__init__(master_key, clock, reactor, password_params)
        self.path = Path(path)
        _create_private(self.path)
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            str(self.path),
            check_same_thread=False,
            isolation_level=None,  # transactions are ours: BEGIN IMMEDIATE ... COMMIT
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_reactor=self._reactor,
        )

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        if not self.path.parent.is_dir():
            raise StorageError(
                f"SQLite store {self.path}: the folder {self.path.parent} is missing"
            )
        return await super().open(upto)

    async def execute(self, transaction: Transaction[T], *, atomic: bool = True) -> T:
        try:
            value: T = await self._pool.runWithConnection(thd_run, transaction, atomic)
            return value
        except sqlite3.Error as exc:  # opening the connection (thd_run translates the rest)
            raise StorageError(f"SQLite store {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._pool.running:
            self._pool.close()
