"""Backends for the one store suite: SQLite in a temporary file, PostgreSQL on the real server.

PostgreSQL: one fresh database per test run (dropped afterwards) on 127.0.0.1:5432 (or the
libpq DSN in $SAC_TEST_PG), one schema per test.  Where no server answers, the PostgreSQL
cases skip and say why.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from sac.keys import MasterKey
from sac.store.connector import Store
from sac.store.postgres import PostgresStore
from sac.store.sqlite import SQLiteStore

ADMIN_DSN = os.environ.get("SAC_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
MASTER = MasterKey.from_text("11" * 32)


class PostgresTestDatabase:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"sac_test_{uuid.uuid4().hex[:12]}"
        admin = psycopg2.connect(admin_dsn, connect_timeout=3)
        try:
            admin.autocommit = True
            admin.cursor().execute(f'CREATE DATABASE "{self.name}"')
        finally:
            admin.close()
        self.dsn = f"{admin_dsn.replace('dbname=postgres', '')} dbname={self.name}"

    def schema_dsn(self) -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(self.dsn)
        try:
            with conn:
                conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
        finally:
            conn.close()
        return f"{self.dsn} options='-c search_path={schema}'"

    def query(self, dsn: str, sql: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(dsn)
        try:
            with conn:
                cursor = conn.cursor()
                cursor.execute(sql)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def drop(self) -> None:
        admin = psycopg2.connect(self.admin_dsn)
        admin.autocommit = True
        cursor = admin.cursor()
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (self.name,),
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        admin.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresTestDatabase | str]:
    """The run's PostgreSQL database, or why there is none."""
    try:
        database = PostgresTestDatabase(ADMIN_DSN)
    except psycopg2.OperationalError as exc:
        yield f"no PostgreSQL server reachable ({ADMIN_DSN}): {str(exc).strip()}"
        return
    yield database
    database.drop()


class Backend:
    """Makes stores of one backend on one database; reads it raw, behind the store's back."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.stores: list[Store] = []
        if kind == "postgresql":
            postgres = request.getfixturevalue("postgres")
            if isinstance(postgres, str):
                pytest.skip(postgres)
            self.postgres = postgres
            self.dsn = postgres.schema_dsn()
        else:
            self.path = tmp_path / "sac.db"

    def make(self, master: MasterKey | None = MASTER, **kw: Any) -> Store:
        store: Store
        if self.kind == "postgresql":
            store = PostgresStore(self.dsn, master, connections=2, **kw)
        else:
            store = SQLiteStore(self.path, master, **kw)
        self.stores.append(store)
        return store

    def raw(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "postgresql":
            return self.postgres.query(self.dsn, sql)
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def lock(self) -> Callable[[], None]:
        """Hold the readings behind the store's back (its writes wait); the call to release."""
        if self.kind == "postgresql":
            conn: Any = psycopg2.connect(self.dsn)
            conn.cursor().execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            release = conn.rollback
        else:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            release = lambda: conn.execute("ROLLBACK")  # noqa: E731

        def released() -> None:
            release()
            conn.close()

        return released

    def close_all(self) -> None:
        for store in self.stores:
            pytest_twisted.blockon(Deferred.fromCoroutine(store.close()))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = Backend(request.param, tmp_path, request)
    yield made
    made.close_all()
