"""Alarms benchmark: the meter list's "with alarms" filter and the alarms page's queries on
100 000 meters, 1% of them with open alarms (stored by the ingest, as sessions store them)
and 0.5% with a diagnostic not zero, among 200 000 other events.

Each figure is the median of the measures taken in ``--seconds`` (ms): the first page of the
meters with alarms (50, counted: the page's total, as the list page asks), that page sorted
by last connection, the open alarms' first page (50) and their counts by category.  The
same page without the filter is the reference (one range of the LDN index).  Run:
``.venv/bin/python benchmarks/bench_alarms.py [--seconds S]``.  PostgreSQL is the server of
$SAC_TEST_PG (default 127.0.0.1:5432, user postgres); a fresh database is made and dropped.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from benchmarks.bench_store import LIST_METERS, MASTER, PAGE, T0, Postgres, bulk_meters, ldn
from sac.dlms import Obis
from sac.store import Event, Ingest, MeterQuery, MeterStatus, Store
from sac.store.postgres import PostgresStore
from sac.store.sqlite import SQLiteStore

LOGBOOK = Obis("7.0.99.98.1.255")
ALARMED = LIST_METERS // 100  # meters with an open alarm
DIAGNOSED = LIST_METERS // 200  # meters whose diagnostic is not zero
OTHER_EVENTS = 200_000
CODES = (80, 94, 102, 105, 119)  # tamper, battery, valve, metrology, security


async def fill(store: Store, raw: Callable[[], Any]) -> None:
    """The fleet: meters in bulk (SQL), then the events and statuses through the ingest."""
    conn, placeholder = raw()
    with conn:
        bulk_meters(conn.cursor(), LIST_METERS, 0, placeholder)
    step = LIST_METERS // ALARMED
    alarms = [
        Event(ldn(i), LOGBOOK, CODES[i % len(CODES)], T0, T0, "bench")
        for i in range(0, LIST_METERS, step)
    ]
    others = [
        Event(ldn(n % LIST_METERS), LOGBOOK, 90, T0.replace(minute=n // LIST_METERS), T0, "bench")
        for n in range(OTHER_EVENTS)
    ]
    statuses = [MeterStatus(ldn(i * 7 + 3), connected=T0, diagnostic=4) for i in range(DIAGNOSED)]
    for i in range(0, len(others), 5000):
        await store.readings.ingest(Ingest(events=others[i : i + 5000]))
    await store.readings.ingest(Ingest(events=alarms, statuses=statuses))
    with conn:
        conn.cursor().execute("ANALYZE")
    conn.close()


async def median_ms(seconds: float, work: Callable[[], Awaitable[Any]]) -> float:
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        await work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(name: str, store: Store, seconds: float) -> None:
    alarms = MeterQuery(alarms=True)
    by_time = MeterQuery(alarms=True, sort="last_connection", descending=True)
    page = await store.meters.page(limit=PAGE, query=alarms)
    step = LIST_METERS // ALARMED
    expected = set(range(0, LIST_METERS, step)) | {i * 7 + 3 for i in range(DIAGNOSED)}
    assert page.total == len(expected), page.total
    figures = {
        "list page (no filter)": lambda: store.meters.page(limit=PAGE, query=MeterQuery()),
        "with alarms, page+count": lambda: store.meters.page(limit=PAGE, query=alarms),
        "with alarms, by last conn.": lambda: store.meters.page(limit=PAGE, query=by_time),
        "open alarms, first page": lambda: store.events.open_alarms(limit=PAGE),
        "open alarms by category": lambda: store.events.alarm_counts(),
    }
    print(f"  {name}: {LIST_METERS:,} meters, {len(expected):,} with alarms")
    for label, work in figures.items():
        print(f"    {label:28} {await median_ms(seconds, work):7.2f} ms")


async def main(reactor: Any, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        store = SQLiteStore(path, MASTER, reactor=reactor)
        await store.open()
        await fill(store, lambda: (sqlite3.connect(path), "?"))
        await measure("SQLite", store, seconds)
        await store.close()
    try:
        database = Postgres()
    except psycopg2.OperationalError as exc:
        print(f"  PostgreSQL skipped: {str(exc).strip()}")
        return
    try:
        pg = PostgresStore(database.dsn, MASTER, reactor=reactor, connections=2)
        await pg.open()
        await fill(pg, lambda: (database.connect(), "%s"))
        await measure("PostgreSQL", pg, seconds)
        await pg.close()
    finally:
        database.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, args.seconds)))
    sys.exit(0)
