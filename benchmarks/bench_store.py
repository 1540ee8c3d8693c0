"""Store benchmark: readings ingested per second, and the meter-list query on 100k meters.

    ingest   readings/s through ``IReadings.add`` (a whole Twisted round trip: the
             transaction, the meter lookup, the inserts, the commit) in batches of 1, 100
             and 1000 readings of many meters; the peer is the database driver alone writing
             the same rows into the same table in the same run: ``executemany`` in one
             transaction a batch for SQLite, ``COPY`` for PostgreSQL (the fastest way in).
    list     one page (50 meters) of the meter list among 100 000 meters, at random places,
             through ``IMeters.page``; the peer is the same SQL run by the driver alone.
    sync     SQLite one-row commits with synchronous=FULL (the store's setting) against NORMAL
    layout   PostgreSQL only, ``--layout``: the readings table with a BRIN index on time
             against one partitioned by month -- COPY rate, the "all meters between t1 and
             t2" query, index size -- the measure behind the schema's choice.

Figures that matter are the ratios to the peer, measured in the same run.  Run:
``.venv/bin/python benchmarks/bench_store.py [--seconds S] [--layout]``.  PostgreSQL is
the server of $SAC_TEST_PG (default 127.0.0.1:5432, user postgres); a fresh database is made
and dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import results
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import react

from sac.dlms import Obis
from sac.keys import MasterKey
from sac.store import NewMeter, Reading, Store
from sac.store.postgres import PostgresStore
from sac.store.sqlite import SQLiteStore

ADMIN_DSN = os.environ.get("SAC_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
MASTER = MasterKey.from_text("22" * 32)
INDEX = Obis("7.0.13.2.0.255")
METERS = 1000  # meters the ingest batches spread over
LIST_METERS = 100_000
PAGE = 50
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COLUMNS = ("meter_id", "obis", "attribute", "value", "scaler", "unit", "captured", "received")
COLUMNS += ("source",)


def ldn(i: int) -> str:
    return f"BEN{i:013d}"


class Readings:
    """An endless supply of distinct readings: meter i's index, hour after hour (from
    ``start``: two supplies with far apart starts never give the same reading)."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def batch(self, size: int) -> list[Reading]:
        out = []
        for _ in range(size):
            meter, hour = self.n % METERS, self.n // METERS
            when = T0 + dt.timedelta(hours=hour)
            out.append(Reading(ldn(meter), INDEX, 2, 1000 + self.n, when, "bench", when, -3, 14))
            self.n += 1
        return out


def rows_of(readings: list[Reading]) -> list[tuple[Any, ...]]:
    """The same readings as table rows (meter ids are 1..METERS in insertion order)."""
    return [
        (int(r.ldn[3:]) + 1, str(r.obis), 2, r.value, -3, 14, r.captured, r.received, "peer")
        for r in readings
    ]


# --- databases ------------------------------------------------------------------------------


class Postgres:
    def __init__(self) -> None:
        self.name = f"sac_bench_{uuid.uuid4().hex[:10]}"
        with _admin() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.name}"')
        self.dsn = f"{ADMIN_DSN.replace('dbname=postgres', '')} dbname={self.name}"

    def connect(self) -> Any:
        return psycopg2.connect(self.dsn)

    def drop(self) -> None:
        with _admin() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.name}"')


class _admin:
    def __enter__(self) -> Any:
        self.conn = psycopg2.connect(ADMIN_DSN, connect_timeout=3)
        self.conn.autocommit = True
        return self.conn.cursor()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def sqlite_peer_writer(path: Path) -> Callable[[list[tuple[Any, ...]]], None]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    sql = f"INSERT INTO readings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def write(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, [(*r[:6], r[6].isoformat(), r[7].isoformat(), r[8]) for r in rows])
        conn.execute("COMMIT")

    return write


def postgres_peer_writer(dsn: str) -> Callable[[list[tuple[Any, ...]]], None]:
    conn = psycopg2.connect(dsn)

    def write(rows: list[tuple[Any, ...]]) -> None:
        text = "".join("\t".join(map(str, r)) + "\n" for r in rows)
        with conn, conn.cursor() as cursor:
            cursor.copy_from(io.StringIO(text), "readings", columns=COLUMNS)

    return write


# --- measurements ---------------------------------------------------------------------------


async def rate(
    seconds: float, size: int, source: Readings, write: Callable[[list[Reading]], Any]
) -> float:
    """Batches of ``size`` for ``seconds`` of writing: readings per second.  Making the
    readings (the decoder's work) is not timed; ``write`` is, from Reading objects to commit."""
    done, spent = 0, 0.0
    while spent < seconds:
        batch = source.batch(size)
        start = time.perf_counter()
        result = write(batch)
        if result is not None:
            await result
        spent += time.perf_counter() - start
        done += size
    return done / spent


async def rate_in_flight(
    seconds: float, size: int, source: Readings, store: Store, flight: int
) -> float:
    """``flight`` batches written at once (sessions of many meters ending together)."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batches = [source.batch(size) for _ in range(flight)]
        await gatherResults([ensureDeferred(store.readings.add(b)) for b in batches])
        done += size * flight
    return done / (time.perf_counter() - start)


async def ingest(store: Store, peer: Callable[[list[tuple[Any, ...]]], None], seconds: float):
    source, peer_source = Readings(), Readings(10**8)
    found = {}
    for size in (1, 100, 1000):
        ours = await rate(seconds, size, source, store.readings.add)
        theirs = await rate(seconds, size, peer_source, lambda b: peer(rows_of(b)))
        found[size] = (ours, theirs)
    return found


async def add_meters(store: Store, count: int) -> None:
    for i in range(count):
        await store.meters.add(NewMeter(ldn(i), pdr=f"{i:014d}"))


def bulk_meters(cursor: Any, count: int, start: int, placeholder: str) -> None:
    now = T0.isoformat()
    sql = (
        "INSERT INTO meters (ldn, pdr, profile, created, updated, index_value, last_connection)"
        f" VALUES ({', '.join([placeholder] * 7)})"
    )
    cursor.executemany(
        sql, [(ldn(i), f"{i:014d}", "uni-ts", now, now, i, now) for i in range(start, count)]
    )


async def list_page(
    store: Store, peer: Callable[[str], None], seconds: float
) -> tuple[float, float]:
    """Median milliseconds for one page at a random place: (store, driver alone)."""
    rng = random.Random(7)
    ours, theirs = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        after = ldn(rng.randrange(LIST_METERS - PAGE))
        start = time.perf_counter()
        page = await store.meters.page(after=after, limit=PAGE)
        ours.append(time.perf_counter() - start)
        assert len(page.meters) == PAGE
        start = time.perf_counter()
        peer(after)
        theirs.append(time.perf_counter() - start)
    return statistics.median(ours) * 1000, statistics.median(theirs) * 1000


LIST_SQL = (
    "SELECT id, ldn, pdr, system_title, profile, address, allowed_ips, state, created, updated,"
    " last_connection, index_value, index_scaler, index_unit, index_captured, diagnostic,"
    " battery_value, battery_unit, valve_state, status_at FROM meters WHERE ldn > {p}"
    " ORDER BY ldn LIMIT {limit}"
)


# the figures and their ratios to the peer, kept in benchmarks/results/ at the end
KEPT: dict[str, dict[str, float]] = {"figures": {}, "ratios": {}}


def keep(name: str, ours: float, theirs: float, higher_better: bool = True) -> None:
    """A figure and its peer's; the ratio kept is the SAC's share (higher is better)."""
    KEPT["figures"][f"{name} sac"] = ours
    KEPT["figures"][f"{name} peer"] = theirs
    KEPT["ratios"][f"{name} sac/peer" if higher_better else f"{name} peer/sac"] = (
        ours / theirs if higher_better else theirs / ours
    )


def report_ingest(backend: str, found: dict[int, tuple[float, float]], peer: str) -> None:
    for size, (ours, theirs) in found.items():
        keep(f"{backend} ingest batch {size}", ours, theirs)
        print(
            f"  {backend:10} batch {size:4}: sac {ours:9,.0f} readings/s   {peer} {theirs:9,.0f}"
            f"   ratio {ours / theirs:.2f}"
        )


async def bench_sqlite(reactor: Any, seconds: float, folder: Path) -> None:
    store = SQLiteStore(folder / "sac.db", MASTER, reactor=reactor)
    await store.open()
    await add_meters(store, METERS)
    peer_path = folder / "peer.db"
    peer_store = SQLiteStore(peer_path, MASTER, reactor=reactor)
    await peer_store.open()
    await add_meters(peer_store, METERS)
    await peer_store.close()
    found = await ingest(store, sqlite_peer_writer(peer_path), seconds)
    report_ingest("SQLite", found, "sqlite3 executemany")

    conn = sqlite3.connect(folder / "sac.db", isolation_level=None)
    conn.execute("BEGIN")
    bulk_meters(conn.cursor(), LIST_METERS, METERS, "?")
    conn.execute("COMMIT")
    sql = LIST_SQL.format(p="?", limit=PAGE + 1)
    ours, theirs = await list_page(
        store, lambda after: conn.execute(sql, (after,)).fetchall(), seconds
    )
    keep("SQLite list page ms", ours, theirs, higher_better=False)
    print(
        f"  SQLite     list page of {LIST_METERS:,} meters: sac {ours:.2f} ms"
        f"   sqlite3 {theirs:.2f} ms"
    )
    await store.close()


def bench_sqlite_sync(seconds: float, folder: Path) -> None:
    """One-row transactions with WAL and synchronous=FULL (the store's) against NORMAL: the
    price of surviving a power cut, not only a kill -9."""
    rates = {}
    for mode in ("FULL", "NORMAL"):
        conn = sqlite3.connect(folder / f"sync-{mode}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {mode}")
        conn.execute("CREATE TABLE t (n INTEGER, s TEXT)")
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, 'x')", (done,))
            conn.execute("COMMIT")
            done += 1
        rates[mode] = done / (time.perf_counter() - start)
        conn.close()
    print(
        f"  SQLite     commits/s: synchronous=FULL {rates['FULL']:9,.0f}"
        f"   NORMAL {rates['NORMAL']:9,.0f}   ratio {rates['FULL'] / rates['NORMAL']:.2f}"
    )


async def bench_postgres(reactor: Any, seconds: float) -> None:
    try:
        database = Postgres()
    except psycopg2.OperationalError as exc:
        print(f"  PostgreSQL skipped: no server at {ADMIN_DSN}: {str(exc).strip()}")
        return
    try:
        store = PostgresStore(database.dsn, MASTER, reactor=reactor, connections=4)
        await store.open()
        await add_meters(store, METERS)
        # the peer writes into a copy of the same table, in another schema
        conn = database.connect()
        with conn, conn.cursor() as cursor:
            cursor.execute("CREATE SCHEMA peer")
            cursor.execute("CREATE TABLE peer.readings (LIKE public.readings INCLUDING ALL)")
        peer_dsn = f"{database.dsn} options='-c search_path=peer,public'"
        found = await ingest(store, postgres_peer_writer(peer_dsn), seconds)
        report_ingest("PostgreSQL", found, "psycopg2 COPY")
        flying = await rate_in_flight(seconds, 1000, Readings(2 * 10**8), store, 4)
        print(
            f"  PostgreSQL batch 1000, 4 in flight: sac {flying:9,.0f} readings/s"
            f"   ratio to one COPY at a time {flying / found[1000][1]:.2f}"
        )

        with conn, conn.cursor() as cursor:
            bulk_meters(cursor, LIST_METERS, METERS, "%s")
            cursor.execute("ANALYZE meters")
        sql = LIST_SQL.format(p="%s", limit=PAGE + 1)

        def peer(after: str) -> None:
            with conn.cursor() as cursor:
                cursor.execute(sql, (after,))
                cursor.fetchall()
            conn.rollback()

        ours, theirs = await list_page(store, peer, seconds)
        keep("PostgreSQL list page ms", ours, theirs, higher_better=False)
        print(
            f"  PostgreSQL list page of {LIST_METERS:,} meters: sac {ours:.2f} ms"
            f"   psycopg2 {theirs:.2f} ms"
        )
        conn.close()
        await store.close()
    finally:
        database.drop()


# --- BRIN against monthly partitions ----------------------------------------------------------

LAYOUT_ROWS = 3_000_000  # hourly readings of 360 meters, 11.5 months


def layout_rows(count: int) -> str:
    out = io.StringIO()
    meters = 360
    for n in range(count):
        meter, hour = n % meters + 1, n // meters
        when = (T0 + dt.timedelta(hours=hour)).isoformat()
        out.write(f"{meter}\t7.0.13.2.0.255\t2\t{n}\t-3\t14\t{when}\t{when}\tbench\n")
    out.seek(0)
    return out.getvalue()


def bench_layout() -> None:
    database = Postgres()
    try:
        conn = database.connect()
        conn.autocommit = True
        cursor = conn.cursor()
        body = (
            "meter_id BIGINT NOT NULL, obis TEXT NOT NULL, attribute INTEGER NOT NULL,"
            " value NUMERIC, raw BYTEA, scaler INTEGER, unit INTEGER, captured TIMESTAMPTZ,"
            " received TIMESTAMPTZ NOT NULL, source TEXT NOT NULL"
        )
        cursor.execute(f"CREATE TABLE brin ({body})")
        cursor.execute("CREATE UNIQUE INDEX ON brin (meter_id, obis, attribute, captured)")
        cursor.execute("CREATE INDEX brin_captured ON brin USING BRIN (captured)")
        cursor.execute(f"CREATE TABLE part ({body}) PARTITION BY RANGE (captured)")
        for month in range(1, 13):
            start = dt.date(2026, month, 1)
            end = dt.date(2026 + month // 12, month % 12 + 1, 1)
            cursor.execute(
                f"CREATE TABLE part_{month:02d} PARTITION OF part"
                f" FOR VALUES FROM ('{start}') TO ('{end}')"
            )
        cursor.execute("CREATE TABLE part_default PARTITION OF part DEFAULT")
        cursor.execute("CREATE UNIQUE INDEX ON part (meter_id, obis, attribute, captured)")
        cursor.execute("CREATE INDEX part_captured ON part (captured)")
        text = layout_rows(LAYOUT_ROWS)
        timings = {}
        for table in ("brin", "part"):
            start = time.perf_counter()
            cursor.copy_from(io.StringIO(text), table, columns=COLUMNS)
            timings[table] = LAYOUT_ROWS / (time.perf_counter() - start)
            cursor.execute(f"VACUUM ANALYZE {table}")
        query = (
            "SELECT meter_id, max(value) - min(value) FROM {t}"
            " WHERE captured >= '{start}' AND captured < '{end}' GROUP BY meter_id"
        )
        spans = {"one day": ("2026-06-01", "2026-06-02"), "one month": ("2026-06-01", "2026-07-01")}
        for table in ("brin", "part"):
            figures = []
            for span, (start_day, end_day) in spans.items():
                times = []
                for _ in range(10):
                    start = time.perf_counter()
                    cursor.execute(query.format(t=table, start=start_day, end=end_day))
                    cursor.fetchall()
                    times.append(time.perf_counter() - start)
                figures.append(f"{span} of all meters {statistics.median(times) * 1000:7.2f} ms")
            cursor.execute(
                "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                f" WHERE c.relname ~ '^{table}(_[0-9]+|_default)?_captured(_idx)?$'"
            )
            size = cursor.fetchone()[0] or 0
            print(
                f"  {table:5} COPY {timings[table]:9,.0f} rows/s   {'   '.join(figures)}"
                f"   time index {size / 2**20:6.2f} MiB"
            )
        conn.close()
    finally:
        database.drop()


async def main(reactor: Any, seconds: float, layout: bool) -> None:
    print(f"store benchmark, {seconds:g} s a measure, batches over {METERS} meters")
    with tempfile.TemporaryDirectory() as folder:
        await bench_sqlite(reactor, seconds, Path(folder))
        bench_sqlite_sync(seconds, Path(folder))
    await bench_postgres(reactor, seconds)
    if layout:
        print(f"readings layout in PostgreSQL, {LAYOUT_ROWS:,} rows (a year, hourly):")
        bench_layout()
    KEPT["figures"]["seconds"] = seconds
    results.record("store", {"layout": layout}, KEPT["figures"], KEPT["ratios"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--layout", action="store_true", help="also BRIN against partitions")
    args = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, args.seconds, args.layout)))
    sys.exit(0)
