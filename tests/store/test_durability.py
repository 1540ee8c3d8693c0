"""An acknowledged write survives kill -9 of the writing process, on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from sac.dlms import Obis
from sac.errors import StorageError
from sac.store.sql import Exec
from tests.conftest import ROOT
from tests.store.conftest import Backend
from tests.store.writer import BATCH, LDN

# kill -9 of a writer, PostgreSQL's backends terminated (one by its query, whatever its
# database): alone (make test's second run)
pytestmark = pytest.mark.serial

ACKED_BEFORE_KILL = 25


@pytest_twisted.ensureDeferred
async def test_acknowledged_readings_survive_sigkill(backend: Backend) -> None:
    where = str(backend.path) if backend.kind == "sqlite" else backend.dsn
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.store.writer", backend.kind, where],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = -1
    try:
        for line in writer.stdout:  # type: ignore[union-attr]
            acked = int(line.split()[1])
            if acked >= ACKED_BEFORE_KILL:
                os.kill(writer.pid, signal.SIGKILL)  # mid-ingest: the next batch is under way
                break
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert acked >= ACKED_BEFORE_KILL, writer.stderr.read()  # type: ignore[union-attr]
    assert writer.returncode == -signal.SIGKILL

    store = backend.make()
    await store.open()
    count = await store.readings.count()
    assert count >= (acked + 1) * BATCH  # every acknowledged batch, maybe one more
    assert count % BATCH == 0  # and no batch in part
    values = {r.value for r in await store.readings.last(LDN, Obis("7.0.13.2.0.255"), limit=count)}
    assert set(range((acked + 1) * BATCH)) <= values


@pytest_twisted.ensureDeferred
async def test_a_connection_killed_mid_transaction_fails_it_quietly_and_comes_back(
    backend: Backend,
) -> None:
    """The server ends the connection in the middle of a transaction (a restart, a
    fail-over, an administrator): the caller gets a StorageError, nothing is logged as an
    unhandled error (txpostgres' own rollback logged one, with a traceback, each time), and
    the store works again once it has reconnected."""
    if backend.kind != "postgresql":
        pytest.skip("a server that ends connections: PostgreSQL")
    store = backend.make()
    await store.open()
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:

        def sleeping():
            yield Exec("SELECT pg_sleep(5)", ())

        running = Deferred.fromCoroutine(store.run(sleeping()))
        await deferLater(reactor, 0.3, lambda: None)
        admin = psycopg2.connect(backend.postgres.admin_dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'SELECT pg_sleep(5)'"
            )
            assert cur.fetchall() == [(True,)]
        admin.close()
        try:
            await running
        except StorageError:
            pass
        else:
            raise AssertionError("a transaction whose connection died did not fail")
        assert await back_again(store)
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await store.close()
    errors = [e for e in logged if e.get("log_failure") is not None or e.get("isError")]
    assert not errors, [e.get("log_failure") or e.get("log_format") for e in errors]


@pytest_twisted.ensureDeferred
async def test_idle_connections_the_server_ends_come_back_without_a_traceback(
    backend: Backend,
) -> None:
    """A PostgreSQL restart ends the store's idle connections under it: one warning each,
    no "Unhandled Error" (the reactor's, from txpostgres polling a dead socket), and the
    store works again."""
    if backend.kind != "postgresql":
        pytest.skip("a server that ends connections: PostgreSQL")
    store = backend.make()
    await store.open()
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        admin = psycopg2.connect(backend.postgres.admin_dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (backend.postgres.name,),
            )
            assert len(cur.fetchall()) == 2  # the store's two connections, idle
        admin.close()
        await deferLater(reactor, 0.3, lambda: None)  # each sees its socket end
        assert await back_again(store)
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await store.close()
    errors = [e for e in logged if e.get("log_failure") is not None or e.get("isError")]
    assert not errors, [str(e.get("log_failure") or e.get("log_format")) for e in errors]
    lost = [e for e in logged if (e.get("log_format") or "").startswith("PostgreSQL connection")]
    assert len(lost) == 2


async def back_again(store) -> bool:
    """Whether the store answers again, within 10 s: four calls in a row (both of the pool's
    connections, twice; while a dead one reconnects, its turns fail at once)."""
    working = 0
    for _ in range(100):
        try:
            working = working + 1 if await store.readings.count() == 0 else 0
        except StorageError:
            working = 0
        if working == 4:
            return True
        await deferLater(reactor, 0.1, lambda: None)
    return False
