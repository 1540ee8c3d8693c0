"""The server side of ``benchmarks/bench_web.py``: ``python benchmarks/web_sac.py STORE
READY_FILE --meters N``.

Starts the SAC's service as ``twistd sac`` does (web only) on the store (``sqlite:PATH`` or
a PostgreSQL DSN), fills it -- N meters with their list
values in one bulk insert, one meter with a year of hourly and daily index readings through
``IReadings.ingest``, an operator -- then serves the SAC's web application on a loopback port,
and on another port the peer: a bare Klein route answering the same bytes as the SAC's list
page, the framework's floor for a page of that size.  Writes ``{"web": port, "peer": port,
"ldn": the meter with history}`` to READY_FILE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from pathlib import Path
from typing import Any

from klein import Klein
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site

from sac.config import load_config
from sac.dlms import Obis
from sac.keys import MasterKey
from sac.store import Ingest, Reading, Role
from sac.tap import SacService

INDEX = Obis("7.0.13.2.0.255")
DAILY = Obis("7.1.13.2.0.255")  # stands for the daily profile column in this benchmark
PASSWORD = "bench password"
MASTER = MasterKey.from_text("33" * 32)


def meter_rows(count: int, now: dt.datetime) -> list[tuple[Any, ...]]:
    rng = random.Random(5)
    rows = []
    for i in range(count):
        seen = now - dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 30))
        rows.append(
            (
                f"BEN{i:013d}",
                f"{rng.randrange(10**13, 10**14)}",
                bytes([0x2F, 0x19]) + i.to_bytes(6, "big"),
                "uni-ts-11291-12-2",
                now,
                now,
                seen,
                rng.randrange(0, 40_000_000),
                -3,
                14,
                seen,
                rng.choice((0, 0, 0, 0, 0, 0, 0, 0x80)),
                rng.randrange(0, 5000),
                4,
                rng.choice((1, 1, 1, 1, 1, 1, 0, 2)),
                seen,
            )
        )
    return rows


COLUMNS = (
    "ldn, pdr, system_title, profile, created, updated, last_connection, index_value,"
    " index_scaler, index_unit, index_captured, diagnostic, battery_value, battery_unit,"
    " valve_state, status_at"
)


def bulk_insert(address: str, rows: list[tuple[Any, ...]]) -> None:
    if address.startswith(("postgres", "host=", "dbname=")) or "=" in address:
        import psycopg2
        from psycopg2.extras import execute_values

        conn = psycopg2.connect(address)
        with conn, conn.cursor() as cursor:
            execute_values(
                cursor, f"INSERT INTO meters ({COLUMNS}) VALUES %s", rows, page_size=5000
            )
            cursor.execute("ANALYZE meters")
        conn.close()
        return
    import sqlite3

    from sac.store.sqlite import _adapt

    conn = sqlite3.connect(address)
    with conn:
        conn.executemany(
            f"INSERT INTO meters ({COLUMNS}) VALUES ({', '.join('?' * 16)})", map(_adapt, rows)
        )
        conn.execute("ANALYZE")
    conn.close()


async def main(args: argparse.Namespace) -> None:
    config = load_config(
        None,
        {
            "SAC_MASTER_KEY": MASTER.secret.hex(),
            "SAC_STORE_ADDRESS": args.store,
            "SAC_PUSH_LISTEN": "",
            "SAC_POLL_ENABLED": "no",
            "SAC_WEB_LISTEN": "tcp:0:interface=127.0.0.1",
            "SAC_WEB_SECURE_COOKIES": "no",
        },
    )
    sac = SacService(config, reactor=reactor, exit_on_failure=False)  # as twistd sac runs it
    sac.startService()
    await sac.ready
    store = sac.store
    now = dt.datetime.now(dt.UTC)
    rows = meter_rows(args.meters, now)
    bulk_insert(args.store, rows)
    ldn = rows[0][0]
    hours = [now - dt.timedelta(hours=h) for h in range(366 * 24, 0, -1)]
    start = 10_000_000
    readings = [
        Reading(ldn, INDEX, 2, start + 120 * k, t, "poll", t, -3, 14) for k, t in enumerate(hours)
    ]
    readings += [
        Reading(ldn, DAILY, 2, start + 120 * k, t, "poll", t, -3, 14)
        for k, t in enumerate(hours)
        if t.hour == 5
    ]
    for i in range(0, len(readings), 2000):
        await store.readings.ingest(Ingest(readings=readings[i : i + 2000]))
    await store.users.add("bench", PASSWORD, Role.OPERATOR)
    port = sac.web_ports[0]

    peer = Klein()
    body = [b""]

    @peer.route("/", methods=["GET"])
    def page(request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return body[0]

    @peer.route("/set", methods=["POST"])
    def set_body(request: Any) -> bytes:
        body[0] = request.content.read()
        return b"ok"

    peer_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(peer.resource())
    )
    ready = {"web": port.getHost().port, "peer": peer_port.getHost().port, "ldn": ldn}
    Path(args.ready + ".tmp").write_text(json.dumps(ready))
    Path(args.ready + ".tmp").rename(args.ready)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("ready")
    parser.add_argument("--meters", type=int, default=100_000)
    args = parser.parse_args()
    d = ensureDeferred(main(args))
    d.addErrback(lambda f: (f.printTraceback(file=sys.stderr), reactor.stop()))
    reactor.run()
