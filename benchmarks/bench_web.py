"""Web benchmark: p50/p95 of the meter list (100,000 meters) and of a meter's detail page
(a year of hourly and daily readings), on SQLite and on PostgreSQL.

The SAC's web application runs in its own process (``benchmarks/web_sac.py``); this process
is the browser: one keep-alive HTTP connection, signed in as an operator, each page asked
``--requests`` times in turn.  The peer, measured in the same run: a bare Klein route in the
same server process answering the very bytes of the SAC's list page -- what Twisted, Klein
and HTTP cost for a page that size, with no store and no template.  Target: p95 under 50 ms
for both pages.  Run: ``.venv/bin/python benchmarks/bench_web.py [--meters N] [--requests N]
[--backend sqlite|postgresql|both]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import results
from bench_store import Postgres

HERE = Path(__file__).resolve().parent
TARGET_P95 = 0.050


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: str | bytes | None = None
    ) -> tuple[int, str, float]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        start = time.perf_counter()
        data = body.encode() if isinstance(body, str) else body
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        took = time.perf_counter() - start
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        return response.status, data.decode(), took

    def sign_in(self) -> None:
        _, page, _ = self.request("GET", "/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = urlencode({"csrf": csrf, "username": "bench", "password": "bench password"})
        status, _, _ = self.request("POST", "/login", form)
        if status != 303:
            raise SystemExit(f"sign-in failed: {status}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(client: Client, path: str, count: int) -> tuple[float, float, int]:
    client.request("GET", path)  # warm
    times = []
    size = 0
    for _ in range(count):
        status, body, took = client.request("GET", path)
        if status != 200:
            raise SystemExit(f"{path}: HTTP {status}")
        times.append(took)
        size = len(body)
    return percentile(times, 0.5), percentile(times, 0.95), size


def run(
    backend: str, store: str, args: argparse.Namespace, folder: Path, kept: dict[str, Any]
) -> bool:
    ready = folder / f"ready-{backend}.json"
    started = time.perf_counter()
    err = (folder / f"{backend}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(HERE / "web_sac.py"), store, str(ready), "--meters", str(args.meters)],
        stdout=err,
        stderr=subprocess.STDOUT,
        cwd=HERE.parent,
    )
    try:
        while not ready.exists():
            if server.poll() is not None:
                raise SystemExit((folder / f"{backend}.log").read_text()[-3000:])
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        print(
            f"  {backend}: {args.meters:,} meters and a year of readings set up in"
            f" {time.perf_counter() - started:.0f} s"
        )
        sac = Client(info["web"])
        sac.sign_in()
        ldn = info["ldn"]
        _, list_page, _ = sac.request("GET", "/meters")
        after = re.search(r'<a href="([^"]+)" rel="next">', list_page)
        deep = after.group(1).replace("&amp;", "&") if after else "/meters"
        pages = [
            ("list, first page", "/meters"),
            ("list, by index desc", "/meters?sort=index&dir=desc"),
            ("list, alarms, by last connection", "/meters?alarms=1&sort=last_connection"),
            ("list, LDN prefix search", "/meters?q=BEN00000000123"),
            ("list, next page", deep),
            ("detail, 30 days", f"/meters/{ldn}?range=30d"),
            ("detail, 1 year (8,784 hourly)", f"/meters/{ldn}?range=1y"),
        ]
        peer = Client(info["peer"])
        peer.request("POST", "/set", list_page)
        p50_peer, p95_peer, peer_size = measure(peer, "/", args.requests)
        kept["figures"][f"{backend} peer p95"] = p95_peer
        ok = True
        print(f"    {'page':36} {'p50':>8} {'p95':>8} {'bytes':>8}  p95 ratio to the peer")
        print(
            f"    {'peer: bare Klein, list page bytes':36} {p50_peer * 1000:6.2f}ms"
            f" {p95_peer * 1000:6.2f}ms {peer_size:8,}"
        )
        for name, path in pages:
            p50, p95, size = measure(sac, path, args.requests)
            ok &= p95 < TARGET_P95
            kept["figures"][f"{backend} {name} p95"] = p95
            kept["ratios"][f"{backend} {name} peer/sac p95"] = p95_peer / p95
            print(
                f"    {name:36} {p50 * 1000:6.2f}ms {p95 * 1000:6.2f}ms {size:8,}"
                f"  {p95 / p95_peer:6.1f}{'' if p95 < TARGET_P95 else '  NOT under 50 ms'}"
            )
        return ok
    finally:
        server.terminate()
        server.wait(10)
        err.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    print(
        f"web benchmark: {args.requests} requests a page, one keep-alive connection;"
        f" target p95 < {TARGET_P95 * 1000:.0f} ms"
    )
    ok = True
    kept: dict[str, Any] = {"figures": {}, "ratios": {}}
    with tempfile.TemporaryDirectory(prefix="sac-bench-web-") as tmp:
        folder = Path(tmp)
        if args.backend in ("sqlite", "both"):
            ok &= run("sqlite", str(folder / "sac.db"), args, folder, kept)
        if args.backend in ("postgresql", "both"):
            database = Postgres()
            try:
                ok &= run("postgresql", database.dsn, args, folder, kept)
            finally:
                database.drop()
    print(f"  target    p95 < 50 ms on every page: {'met' if ok else 'NOT met'}")
    options = {"meters": args.meters, "backend": args.backend}
    results.record("web", options, kept["figures"], kept["ratios"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
