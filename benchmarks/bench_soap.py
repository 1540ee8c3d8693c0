"""SOAP benchmark: readings a second served by the billing export (``ExportIndexReadings``),
page after page with its cursor, on PostgreSQL, and how the SAC answers meanwhile.

This process is the SAC (store + web on a free port); the ERP is a separate process (so that
its XML parsing does not share our GIL), posting hand-written envelopes with HTTP Basic over
one keep-alive connection and counting the readings in each answer with lxml.  The peer,
measured in the same run and process: the store's own ``readings_page`` over the same
readings -- what the database and the store cost, without SOAP.  The ratio says what SOAP
(the answer's serialisation, HTTP, the audit line) adds.

While the ERP exports at full speed (issue 23): a third process asks ``GET /health`` every
20 ms on its own connection (its latency's p50, p99 and max), and a 10 ms LoopingCall in the
SAC process records how late each of its turns comes (the reactor's lag: p99 and max) --
what a push arriving meanwhile would wait before it is read.  Targets: at least 30,000
readings/s, ``/health`` and the lag p99 under 100 ms.  It also prints the SAC process's CPU
time a reading served (every thread; what one core would serve, whatever the ERPs' parsing
and the machine's other load take), and writes its figures to ``benchmarks/results/``
(:mod:`results`; the ratio compared is SOAP's readings/s over the peer's).  Run: ``.venv/bin/python
benchmarks/bench_soap.py [--readings N] [--page N] [--erps N]``; with ``--erps N``, N ERPs
export everything at once (what one SAC process serves, rather than what one sequential
client waits for).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import statistics
import sys
import time
from typing import Any

import results
from bench_store import Postgres
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.web.server import Site

from sac.keys import MasterKey
from sac.passwords import ScryptParams
from sac.profiles import discover_profiles
from sac.runtime import tune_gc
from sac.services.readings import INDEX
from sac.store import Ingest, NewMeter, Reading, Role
from sac.store.factory import store_at
from sac.web.app import Web, WebSettings

PASSWORD = "benchmark password"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TARGET_RATE = 30_000  # readings/s
TARGET_P99 = 0.100  # s: /health and the reactor's lag, during an export at full speed
BEAT = 0.010  # the lag probe's period

# the ERP: posts ExportIndexReadings until the cursor runs out; prints readings and seconds
ERP = r"""
import base64, http.client, json, sys, time
from lxml import etree
port, page, end = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
NS = "urn:sac:erp:1"
auth = "Basic " + base64.b64encode(b"erp:benchmark password").decode()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
cursor, readings, pages, t0 = None, 0, 0, time.perf_counter()
while True:
    c = f"<tns:cursor>{cursor}</tns:cursor>" if cursor else ""
    body = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:tns="{NS}"><soap:Body><tns:ExportIndexReadings>'
        f"<tns:start>2026-01-01T00:00:00Z</tns:start><tns:end>{end}</tns:end>{c}"
        f"<tns:limit>{page}</tns:limit></tns:ExportIndexReadings></soap:Body></soap:Envelope>"
    ).encode()
    conn.request("POST", "/soap", body, {"Content-Type": "text/xml; charset=utf-8",
                 "SOAPAction": "ExportIndexReadings", "Authorization": auth})
    answer = conn.getresponse().read()
    root = etree.fromstring(answer)
    readings += len(root.findall(f".//{{{NS}}}ReadingInfo"))
    pages += 1
    found = root.find(f".//{{{NS}}}cursor")
    cursor = found.text if found is not None else None
    if not cursor:
        break
print(json.dumps({"readings": readings, "pages": pages, "seconds": time.perf_counter() - t0}))
"""


# the monitor: GET /health every 20 ms until its stdin closes; prints the latencies
HEALTH = r"""
import http.client, json, sys, threading, time
port = int(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
took = []
while not stop.is_set():
    t = time.perf_counter()
    conn.request("GET", "/health")
    assert conn.getresponse().read()
    took.append(time.perf_counter() - t)
    stop.wait(0.02)
print(json.dumps(took))
"""


class Child(ProcessProtocol):
    """A helper process (the ERP, the monitor): its output once it ends."""

    def __init__(self) -> None:
        self.out = b""
        self.done: Deferred[bytes] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason: Any) -> None:
        self.done.callback(self.out)


def spawn(reactor: Any, script: str, *args: Any) -> Child:
    child = Child()
    argv = [sys.executable, "-c", script, *map(str, args)]
    reactor.spawnProcess(child, sys.executable, argv, env=None)
    return child


async def fill(store: Any, readings: int, meters: int = 1000) -> dt.datetime:
    """``meters`` meters with ``readings // meters`` hourly index readings each; the end."""
    hours = readings // meters
    for i in range(meters):
        await store.meters.add(NewMeter(f"BEN{i:013d}"))
    batch: list[Reading] = []
    for i in range(meters):
        for h in range(hours):
            at = T0 + dt.timedelta(hours=h)
            batch.append(Reading(f"BEN{i:013d}", INDEX, 2, 1000 * h, at, "poll", at, -3, 14))
            if len(batch) == 20_000:
                await store.readings.ingest(Ingest(readings=batch))
                batch = []
    if batch:
        await store.readings.ingest(Ingest(readings=batch))
    await store.users.add("erp", PASSWORD, Role.VIEWER)
    return T0 + dt.timedelta(hours=hours)


async def store_rate(store: Any, end: dt.datetime, page: int) -> tuple[int, float]:
    """The peer: the store alone, page after page (readings, readings/s)."""
    started, count, cursor = time.perf_counter(), 0, None
    while True:
        got = await store.exports.readings(
            T0, end, obis=INDEX, attribute=2, cursor=cursor, limit=page
        )
        count += len(got.readings)
        cursor = got.cursor
        if cursor is None:
            return count, count / (time.perf_counter() - started)


async def export(
    reactor: Any, store: Any, end: dt.datetime, page: int, erps_count: int
) -> dict[str, Any]:
    """``erps_count`` ERPs exporting everything over SOAP at once, each on its connection,
    the monitor and the lag probe running meanwhile."""
    web = Web(store, discover_profiles().registry, settings=WebSettings(secure_cookies=False))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(web.resource()))
    number = port.getHost().port
    ticks: list[float] = []
    beat = LoopingCall(lambda: ticks.append(time.perf_counter()))
    beat.start(BEAT)
    monitor = spawn(reactor, HEALTH, number)
    started, cpu = time.perf_counter(), time.process_time()
    erps = [spawn(reactor, ERP, number, page, end.isoformat()) for _ in range(erps_count)]
    results = [json.loads(await erp.done) for erp in erps]
    result = {
        "readings": sum(r["readings"] for r in results) // erps_count,  # each, every reading
        "served": sum(r["readings"] for r in results),
        "pages": sum(r["pages"] for r in results),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,  # the SAC process's, every thread
    }
    beat.stop()
    monitor_transport = monitor.transport
    assert monitor_transport is not None
    monitor_transport.closeStdin()
    result["health"] = sorted(json.loads(await monitor.done))
    result["lag"] = sorted(max(0.0, b - a - BEAT) for a, b in itertools.pairwise(ticks))
    await port.stopListening()
    return result


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def report(args: argparse.Namespace, count: int, peer_rate: float, result: dict[str, Any]) -> None:
    soap_rate = result["served"] / result["seconds"]
    assert result["readings"] == count, (result, count)
    health, lag = result["health"], result["lag"]
    cpu_a_reading = result["cpu"] / result["served"]
    print(f"  {'':34}{'readings/s':>12}{'ratio':>8}")
    print(f"  {'peer: store.exports.readings':34}{peer_rate:12,.0f}{1:8.2f}")
    print(
        f"  {'sac: SOAP ExportIndexReadings':34}{soap_rate:12,.0f}{soap_rate / peer_rate:8.2f}"
        f"   ({args.erps} ERP(s), {result['pages']} pages, {result['seconds']:.1f} s,"
        " every reading once each)"
    )
    print(
        f"  the SAC's CPU: {cpu_a_reading * 1e6:.1f} us a reading served"
        f" (one core: {1 / cpu_a_reading:,.0f} readings/s)"
    )
    print(f"  during the export ({len(health)} /health, {len(lag)} beats of {BEAT * 1000:.0f} ms):")
    print(f"  {'':34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, values in (("GET /health", health), ("the reactor's lag", lag)):
        mid, top, worst = statistics.median(values), p99(values), values[-1]
        print(f"  {name:34}{mid * 1000:9.1f}{top * 1000:9.1f}{worst * 1000:9.1f}")
    verdict = soap_rate >= TARGET_RATE and p99(health) < TARGET_P99 and p99(lag) < TARGET_P99
    print(
        f"  target: >= {TARGET_RATE:,} readings/s, p99 < {TARGET_P99 * 1000:.0f} ms:"
        f" {'met' if verdict else 'NOT met'}"
    )
    figures = {
        "readings_per_s": round(soap_rate),
        "peer_readings_per_s": round(peer_rate),
        "cpu_us_a_reading": round(cpu_a_reading * 1e6, 2),
        "health_p99_ms": round(p99(health) * 1000, 1),
        "lag_p99_ms": round(p99(lag) * 1000, 1),
        "lag_max_ms": round(lag[-1] * 1000, 1),
        "readings": count,
        "target_met": verdict,
    }
    options = {"page": args.page, "erps": args.erps}
    results.record("soap", options, figures, {"soap/peer": soap_rate / peer_rate})


async def main(reactor: Any, args: argparse.Namespace) -> None:
    pg = Postgres()
    try:
        store = store_at(pg.dsn, MasterKey(bytes(32)), password_params=ScryptParams(log2_n=8))
        await store.open()
        end = await fill(store, args.readings)
        conn = pg.connect()  # statistics, as autovacuum would have made them by now
        conn.autocommit = True
        conn.cursor().execute("ANALYZE")
        conn.close()
        tune_gc()  # as the SAC process does once started (sac/tap.py)
        print(
            f"SOAP benchmark: {args.readings // 1000 * 1000:,} index readings on PostgreSQL,"
            f" pages of {args.page:,}"
        )
        count, peer_rate = await store_rate(store, end, args.page)
        result = await export(reactor, store, end, args.page, args.erps)
        report(args, count, peer_rate, result)
        await store.close()
    finally:
        pg.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--erps", type=int, default=1, help="ERPs exporting at once")
    task.react(lambda r: ensureDeferred(main(r, parser.parse_args())))
