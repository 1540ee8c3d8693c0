"""SOAP benchmark: readings a second served by the billing export (``ExportIndexReadings``),
page after page with its cursor, on PostgreSQL.

This process is the SAC (store + web on a free port); the ERP is a separate process (so that
its XML parsing does not share our GIL), posting hand-written envelopes with HTTP Basic over
one keep-alive connection and counting the readings in each answer with lxml.  The peer,
measured in the same run and process: the store's own ``readings_page`` over the same
readings -- what the database and the store cost, without SOAP.  The ratio says what SOAP
(spyne's serialisation, HTTP, the audit line) adds.  Run: ``.venv/bin/python
benchmarks/bench_soap.py [--readings N] [--page N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from bench_store import Postgres
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.web.server import Site

from sac.keys import MasterKey
from sac.passwords import ScryptParams
from sac.profiles import discover_profiles
from sac.services.readings import INDEX
from sac.store import Ingest, NewMeter, Reading, Role
from sac.store.factory import store_at
from sac.web.app import Web, WebSettings

PASSWORD = "benchmark password"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

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


class Erp(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.done: Deferred[bytes] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason: Any) -> None:
        self.done.callback(self.out)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    pg = Postgres()
    try:
        store = store_at(pg.dsn, MasterKey(bytes(32)), password_params=ScryptParams(log2_n=8))
        await store.open()
        meters = 1000
        hours = args.readings // meters
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
        conn = pg.connect()  # statistics, as autovacuum would have made them by now
        conn.autocommit = True
        conn.cursor().execute("ANALYZE")
        conn.close()
        end = T0 + dt.timedelta(hours=hours)
        print(
            f"SOAP benchmark: {meters * hours:,} index readings on PostgreSQL, pages of "
            f"{args.page:,}"
        )

        # the peer: the store alone, page after page
        started, count, cursor = time.perf_counter(), 0, None
        while True:
            page = await store.exports.readings(
                T0, end, obis=INDEX, attribute=2, cursor=cursor, limit=args.page
            )
            count += len(page.readings)
            cursor = page.cursor
            if cursor is None:
                break
        store_rate = count / (time.perf_counter() - started)

        web = Web(store, discover_profiles().registry, settings=WebSettings(secure_cookies=False))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(web.resource())
        )
        erp = Erp()
        reactor.spawnProcess(
            erp,
            sys.executable,
            [sys.executable, "-c", ERP, str(port.getHost().port), str(args.page), end.isoformat()],
            env=None,
        )
        result = json.loads(await erp.done)
        await port.stopListening()
        soap_rate = result["readings"] / result["seconds"]
        assert result["readings"] == count, (result, count)
        print(f"  {'':34}{'readings/s':>12}{'ratio':>8}")
        print(f"  {'peer: store.exports.readings':34}{store_rate:12,.0f}{1:8.2f}")
        print(
            f"  {'sac: SOAP ExportIndexReadings':34}{soap_rate:12,.0f}{soap_rate / store_rate:8.2f}"
            f"   ({result['pages']} pages, {result['seconds']:.1f} s, every reading once)"
        )
        await store.close()
    finally:
        pg.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    task.react(lambda r: ensureDeferred(main(r, parser.parse_args())))
