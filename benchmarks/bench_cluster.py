"""Cluster benchmark: push sessions/s of two SAC processes behind HAProxy against one.

    peer      the bare Twisted peer of bench_push.py (accepts, reads one wrapper frame,
              closes), directly: the transport ceiling for the same load and frames
    peer+lb   HAProxy (Debian's, ``mode tcp``) in front of that peer: the balancer's own cost
    1 sac     one SAC process (the service of ``twistd sac``, as in bench_push.py), directly
    2 sacs    two SAC processes on the same PostgreSQL database (each its name, port and
              spool) behind one HAProxy, ``balance roundrobin`` (``--balance``)

All four in one run, with one load generator (``push_load.py``: every frame pre-built by
the simulator's meter and cipher, plain sockets over epoll), ``--concurrency`` sessions in
flight, ``--seconds`` a measure.  The SAC measures take the fleet's cold shape
(bench_push.py's): each meter pushes once, none seen before by any SAC process, so each
session looks its meter and keys up in PostgreSQL; each SAC measure has its own meters
(``cold0``, ``cold1``: ``--cold-rate`` x ``--seconds`` each).  Before the measures, each
SAC is warmed with hot meters for ``--warmup`` seconds.

Printed for each: sessions/s, p50/p99 of connect-to-close, the servers' CPU a session
(user+sys of the SAC processes, or of the peer; HAProxy's and PostgreSQL's apart), and the
ratios 2 sacs / 1 sac and each to the peer.  Then every acknowledged session (a clean close,
through the balancer too) is looked up in PostgreSQL: lost must be 0, and no push stored
twice.  Figures and ratios go to ``benchmarks/results/`` (``benchmarks/results.py``).
Needs haproxy (``/usr/sbin/haproxy``; ``.ci/run`` installs it) and PostgreSQL at
$SAC_TEST_PG (default 127.0.0.1:5432, user postgres); a fresh database is made and dropped.

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--seconds S] [--concurrency C]
[--cold-rate R] [--pool N] [--balance roundrobin|leastconn]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import results
from bench_push import provision
from bench_store import ADMIN_DSN
from push_children import INDEX, ROOT, Child, Postgres, cpu_seconds, ms, postgres_cpu

sys.path.insert(0, str(ROOT))  # the HAProxy helper of the tests (tests/run/balancer.py)
from tests.run.balancer import HAPROXY, Haproxy, free_port

HOT = 1000  # meters for the warm-up and the peers' measures (cycling)


class Cluster:
    """The processes of a run: the load, two SACs, the peer and the two balancers."""

    def __init__(self, args: argparse.Namespace, database: Postgres, folder: Path) -> None:
        self.args, self.database, self.folder = args, database, folder
        self.parts = 2 * args.turns  # one cold population a slice
        self.cold = math.ceil(args.cold_rate * args.seconds / args.turns)
        rounds = max(2, math.ceil(args.cold_rate * (args.seconds + 2 * args.warmup) / HOT))
        load = ["load", "--meters", str(HOT), "--cold", str(self.parts * self.cold)]
        load += ["--cold-parts", str(self.parts), "--rounds", str(rounds)]
        self.load = Child("load", load, folder)
        self.children = [self.load]
        self.balancers: list[Haproxy] = []
        names = ["hot", *(f"cold{n}" for n in range(self.parts))]
        self.acked = {name: folder / f"acked-{name}.tsv" for name in names}
        for path in self.acked.values():
            path.touch()

    def start(self) -> None:
        started = time.perf_counter()
        provision(self.database, HOT + self.parts * self.cold)
        print(
            f"  setup     {HOT:,} hot + {self.parts} x {self.cold:,} cold meters and their keys"
            " provisioned"
            f" in {time.perf_counter() - started:.1f} s (COPY)"
        )
        self.sacs = [self._sac(name) for name in ("a", "b")]
        self.peer = Child("peer", ["peer", "--backlog", str(self.args.backlog)], self.folder)
        self.children += [*self.sacs, self.peer]
        for child in self.children:
            child.wait_ready()
        print(
            f"  frames    {self.load.ready['frames']:,} pre-built, ready"
            f" {time.perf_counter() - started:.1f} s after the start"
        )
        self.lb_sacs = self._balancer("lb-sacs", [s.ready["port"] for s in self.sacs])
        self.lb_peer = self._balancer("lb-peer", [self.peer.ready["port"]])

    def _sac(self, name: str) -> Child:
        log = self.folder / f"sac-{name}.log"
        args = ["sac", self.database.dsn, "--pool", str(self.args.pool), "--name", f"bench-{name}"]
        args += ["--backlog", str(self.args.backlog), "--log", str(log)]
        return Child(f"sac-{name}", args, self.folder)

    def _balancer(self, name: str, backends: list[int]) -> Haproxy:
        balancer = Haproxy(
            self.folder, free_port(), backends, name=name, balance=self.args.balance, maxconn=4000
        )
        self.balancers.append(balancer)
        balancer.wait()
        return balancer

    def stop(self) -> None:
        for balancer in self.balancers:
            balancer.stop()
        for child in self.children:
            child.stop()


def stored(sacs: list[Child]) -> list[int]:
    return [s.ask(op="stats")["counters"].get("sac_push_stored_total", 0) for s in sacs]


def transactions(sacs: list[Child]) -> int:
    """The ingest transactions of both SACs so far (a transaction stores many sessions)."""
    return sum(s.ask(op="stats")["transactions"] for s in sacs)


def phase(
    run: Cluster, port: int, servers: list[int], balancer: Haproxy | None, **kw: Any
) -> dict[str, Any]:
    """One measure: the load on ``port``; the CPU of ``servers`` (pids), of the balancer,
    of PostgreSQL and of the load over it."""
    kw.setdefault("concurrency", run.args.concurrency)
    kw.setdefault("seconds", run.args.seconds)
    pids = servers + ([balancer.pid] if balancer else [])
    cpu0 = [cpu_seconds(pid) for pid in pids]
    pg0, load0, tx0 = postgres_cpu(), cpu_seconds(run.load.pid), transactions(run.sacs)
    r = run.load.ask(op="sessions", port=port, **kw)
    r["transactions"] = transactions(run.sacs) - tx0
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu0, strict=True)]
    r["server_cpu"] = sum(cpu[: len(servers)])
    r["lb_cpu"] = cpu[-1] if balancer else 0.0
    r["pg_cpu"] = max(0.0, postgres_cpu() - pg0)
    r["load_cpu"] = cpu_seconds(run.load.pid) - load0
    r["rate"] = r["ok"] / r["elapsed"]
    done = max(r["ok"], 1)
    for part in ("server", "lb", "pg"):
        r[f"{part}_us"] = r[f"{part}_cpu"] / done * 1e6
    return r


def flags(run: Cluster, population: str) -> dict[str, Any]:
    """The SAC's sessions: each frame once, every acknowledged one recorded."""
    return {"cycle": False, "record": str(run.acked[population]), "population": population}


def measure(run: Cluster) -> dict[str, dict[str, Any]]:
    """The peers, then 1 sac and 2 sacs in turn (``--turns`` slices each, each slice on
    cold meters of its own): a change of the machine's load falls on both alike."""
    a, b = run.sacs
    for port in (a.ready["port"], run.lb_sacs.port):  # warm: both SACs, hot meters
        run.load.ask(op="sessions", port=port, cursor="sac", seconds=run.args.warmup,
                     concurrency=run.args.concurrency, **flags(run, "hot"))  # fmt: skip
    peer = {"cursor": "peer", "cycle": True}
    found = {
        "peer": phase(run, run.peer.ready["port"], [run.peer.pid], None, **peer),
        "peer+lb": phase(run, run.lb_peer.port, [run.peer.pid], run.lb_peer, **peer),
    }
    slices: dict[str, list[dict[str, Any]]] = {"1 sac": [], "2 sacs": []}
    split = [0, 0]
    seconds = run.args.seconds / run.args.turns
    for turn in range(run.args.turns):
        one, two = flags(run, f"cold{2 * turn}"), flags(run, f"cold{2 * turn + 1}")
        slices["1 sac"].append(
            phase(run, a.ready["port"], [a.pid], None, cursor="sac", seconds=seconds, **one)
        )
        before, both = stored(run.sacs), [a.pid, b.pid]
        slices["2 sacs"].append(
            phase(run, run.lb_sacs.port, both, run.lb_sacs, cursor="sac", seconds=seconds, **two)
        )
        split = [s + n - m for s, n, m in zip(split, stored(run.sacs), before, strict=True)]
    for name, parts in slices.items():
        found[name] = joined(parts)
        print(f"  {name:8} by slice: " + ", ".join(f"{r['rate']:,.0f}/s" for r in parts))
    found["2 sacs"]["split"] = split
    return found


def joined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The slices of one side as one measure: sessions over time, CPU over sessions; the
    percentiles are the slices' medians, the max the largest."""
    r: dict[str, Any] = {k: sum(p[k] for p in parts) for k in ("ok", "elapsed", "transactions")}
    r["refused"] = sum(p["refused"] for p in parts)
    r.update({k: sum(p[k] for p in parts) for k in ("failed", "unfinished")})
    for part in ("server", "lb", "pg"):
        r[f"{part}_cpu"] = sum(p[f"{part}_cpu"] for p in parts)
        r[f"{part}_us"] = r[f"{part}_cpu"] / max(r["ok"], 1) * 1e6
    r["rate"] = r["ok"] / r["elapsed"]
    for q in ("p50", "p99"):
        r[q] = sorted(p[q] for p in parts)[len(parts) // 2]
    r["max"] = max(p["max"] for p in parts)
    return r


def describe(found: dict[str, dict[str, Any]]) -> None:
    peer = found["peer"]["rate"]
    print(
        f"  {'':8} {'per s':>7} {'÷peer':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'server µs':>9} {'HAProxy µs':>10} {'PG µs':>6}   refused/failed/unfinished"
    )
    for name, r in found.items():
        print(
            f"  {name:8} {r['rate']:7,.0f} {r['rate'] / peer:6.2f} {ms(r['p50'])[:-3]}"
            f" {ms(r['p99'])[:-3]} {r['server_us']:9.0f} {r['lb_us']:10.0f} {r['pg_us']:6.0f}"
            f"   {r['refused']}/{r['failed']}/{r['unfinished']}"
            f"   ({r['ok']:,} in {r['elapsed']:.1f} s)"
        )
    split = found["2 sacs"]["split"]
    one, two = found["1 sac"], found["2 sacs"]
    print(
        f"  2 sacs: {split[0]:,} pushes stored by A, {split[1]:,} by B;"
        f" 2 sacs / 1 sac = {two['rate'] / one['rate']:.2f}   sessions an ingest transaction:"
        f" 1 sac {one['ok'] / max(one['transactions'], 1):.1f},"
        f" 2 sacs {two['ok'] / max(two['transactions'], 1):.1f}"
    )
    print(
        "  (CPU µs: user+sys a session acknowledged; server = the SAC processes, or the peer;"
        " PG: every postgres process of the machine)"
    )


def verify(run: Cluster) -> dict[str, int]:
    """Once both spools are replayed: every acknowledged session's push in PostgreSQL, and
    none stored twice."""
    drained = time.monotonic()
    while any(s.ask(op="stats")["spooled"] for s in run.sacs) and time.monotonic() < drained + 300:
        time.sleep(0.5)
    lost = {}
    for name, path in run.acked.items():
        total, lost[name] = run.database.lost(path)
        print(f"  verified  {name}: {total:,} acknowledged, lost {lost[name]}")
    twice = run.database.one(
        "SELECT count(*) FROM (SELECT 1 FROM readings WHERE obis = %s AND attribute = 2"
        " GROUP BY meter_id, captured HAVING count(*) > 1) AS d",
        (INDEX,),
    )
    print(f"            pushes stored twice: {twice}")
    return {**lost, "stored twice": twice}


def keep(args: argparse.Namespace, found: dict[str, dict[str, Any]], lost: dict[str, int]) -> None:
    pick = ("rate", "p50", "p99", "max", "server_us", "lb_us", "pg_us", "ok", "elapsed")
    pick += ("transactions",)
    figures: dict[str, Any] = {name: {k: r[k] for k in pick} for name, r in found.items()}
    figures["split"] = found["2 sacs"]["split"]
    figures["lost"] = lost
    figures["seconds"] = args.seconds
    rate = {name: r["rate"] for name, r in found.items()}
    ratios = {
        "2 sacs/1 sac": rate["2 sacs"] / rate["1 sac"],
        "1 sac/peer": rate["1 sac"] / rate["peer"],
        "2 sacs/peer": rate["2 sacs"] / rate["peer"],
        "2 sacs/peer+lb": rate["2 sacs"] / rate["peer+lb"],
        "peer+lb/peer": rate["peer+lb"] / rate["peer"],
    }
    for name, value in ratios.items():
        print(f"  ratio     {name:15} {value:5.2f}")
    options = {"concurrency": args.concurrency, "pool": args.pool, "balance": args.balance}
    figures["turns"] = args.turns
    results.record("cluster", options, figures, ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each of the 4 measures")
    parser.add_argument("--cold-rate", type=float, default=2100.0, help="cold meters a second")
    parser.add_argument("--concurrency", type=int, default=200, help="sessions in flight")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds on each SAC first")
    parser.add_argument(
        "--turns", type=int, default=4, help="1 sac and 2 sacs in turn, in this many slices"
    )
    parser.add_argument("--pool", type=int, default=4, help="PostgreSQL connections a SAC")
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog")
    parser.add_argument("--balance", choices=("roundrobin", "leastconn"), default="roundrobin")
    args = parser.parse_args()
    print(
        f"cluster benchmark, cold shape: {args.concurrency} sessions in flight,"
        f" {args.seconds:g} s a measure, HAProxy {args.balance}; {os.cpu_count()} CPUs"
    )
    if not HAPROXY:
        print("  skipped: no haproxy (Debian's package haproxy)")
        return 0
    try:
        database = Postgres()
    except psycopg2.OperationalError as exc:
        print(f"  skipped: no PostgreSQL server at {ADMIN_DSN}: {str(exc).strip()}")
        return 0
    try:
        with tempfile.TemporaryDirectory() as folder:
            run = Cluster(args, database, Path(folder))
            try:
                run.start()
                found = measure(run)
                describe(found)
                lost = verify(run)
                keep(args, found, lost)
            finally:
                run.stop()
            return 0 if not any(lost.values()) else 1
    finally:
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
