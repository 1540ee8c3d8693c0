"""The production store: PostgreSQL through txpostgres (asynchronous psycopg2, no threads)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg2
from twisted.internet.defer import Deferred
from txpostgres import txpostgres

from sac.errors import StorageError
from sac.keys import MasterKey
from sac.passwords import DEFAULT, ScryptParams
from sac.store.interface import Store, _utc_now
from sac.store.transactions import Conflict, Exec, Query, Transaction

__all__ = ["PostgresStore"]


class _Pool(txpostgres.ConnectionPool):  # type: ignore[misc]
    """txpostgres' pool with the reactor given, not imported."""

    def __init__(self, reactor: Any, dsn: str, size: int) -> None:
        self.reactor = reactor
        super().__init__(None, dsn, min=size)


def _sql(sql: str) -> str:
    return sql.replace("?", "%s")  # the shared SQL has no literal ? or %


async def _drive(cursor: Any, transaction: Transaction) -> Any:
    result: Any = None
    while True:
        try:
            op = transaction.send(result)
        except StopIteration as done:
            return done.value
        sql = _sql(op.sql) + (
            " FOR UPDATE SKIP LOCKED" if isinstance(op, Query) and op.lock else ""
        )
        await cursor.execute(sql, tuple(op.params))
        result = cursor.rowcount if isinstance(op, Exec) else cursor.fetchall()


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(
        self,
        dsn: str,
        master_key: MasterKey | None,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        connections: int = 4,
        reactor: Any = None,
        password_params: ScryptParams = DEFAULT,
    ) -> None:
        super().__init__(master_key, clock, reactor, password_params)
        self._pool = _Pool(self._reactor, dsn, connections)
        self._started = False

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        if not self._started:
            try:
                await self._pool.start()
            except psycopg2.Error as exc:
                raise StorageError(f"PostgreSQL: cannot connect: {exc}".strip()) from None
            self._started = True
        return await super().open(upto)

    async def _run(self, transaction: Transaction) -> Any:
        try:
            return await self._pool.runInteraction(
                lambda cursor: Deferred.fromCoroutine(_drive(cursor, transaction))
            )
        except psycopg2.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc}".strip()) from None
        except psycopg2.Error as exc:
            raise StorageError(f"PostgreSQL: {exc}".strip()) from None

    async def close(self) -> None:
        if self._started:
            self._pool.close()
            self._started = False
