"""Push benchmark: sessions per second durably stored by one SAC process on PostgreSQL.

    peer     a bare Twisted server (its own process) that accepts, reads one wrapper frame
             and closes: the transport ceiling, in connections/s, for the same load
             generator sending the same frames, measured in the same run
    cold     the fleet's real shape (the default measure): a meter pushes once a day, so
             nearly every push comes from a meter the SAC has not seen for hours, its row
             and keys in no cache.  A fleet of ``--cold-rate`` x ``--seconds`` meters (42,000
             for 20 s), each pushing once at most in the measure, none seen before
    hot      ``--meters`` meters (2,000) cycling, each again as soon as its session ends:
             always in the SAC's 30-second caches; then the same meters calling in at the
             target rate whatever the SAC does (open loop: the p99 that counts)
             Both SAC measures: one SAC process (the service of ``twistd sac``, logging a
             line a session at info), ``--concurrency`` sessions at once, each meter one
             session at a time: connect, push one ciphered CF47 frame, wait for the SAC's
             clean close (it stores before it closes).  Sessions/s and readings/s stored,
             p50/p99 of connect-to-close, the SAC's CPU a session (user+sys, /proc), its
             peak RSS, and its stalls: a call due every 10 ms in the SAC's reactor notes how
             late it ran (p99 and longest loop lag, the time in lags over 20 ms).  A table
             puts cold and hot side by side with the peer.  Afterwards every acknowledged
             session is looked up in PostgreSQL, by shape: lost must be 0
    idle     ``--idle`` connections opened and left silent: all accepted (the SAC's count),
             all still open after ``--hold`` seconds, a push session still served meanwhile,
             the SAC's RSS with them held

The fleet (hot and cold meters and their keys) is written into a fresh database with one
COPY a table, while the load generator pre-builds every frame with the simulator's own meter
and cipher (invocation counters rising session after session; frame k of a hot meter is its
push at k seconds after the start, so no two sessions of a meter carry the same readings);
the set-up says how long both took.  The load drives plain non-blocking sockets over epoll:
a session costs it a few syscalls, not a frame build.

The figures and their ratios to the peer are written to ``benchmarks/results/`` (see
``benchmarks/results.py``; ``make bench-check`` compares them with the run before).  The
target: >= 2,100 push sessions/s durably stored, p99 < 250 ms, nothing lost.  Run:
``.venv/bin/python benchmarks/bench_push.py [--seconds S] [--shape cold|hot|both]
[--meters N] [--cold-meters N] [--concurrency C] [--idle N] [--profile S]``.  PostgreSQL is
the server of $SAC_TEST_PG (default 127.0.0.1:5432, user postgres); a fresh database is made
and dropped.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import results
from bench_store import ADMIN_DSN
from push_children import (
    HELPER,
    ROOT,
    Child,
    ChildFailed,
    Postgres,
    cpu_seconds,
    memory,
    mib,
    ms,
    postgres_cpu,
)

TARGET_RATE, TARGET_P99 = 2100.0, 0.250


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, database: Postgres, folder: Path) -> int:
    shapes = SHAPES[args.shape]
    cold = fleet_size(args) if "cold" in shapes else 0
    hot_sessions = args.max_rate * (args.seconds * ("hot" in shapes) + args.warmup + args.profile)
    hot_sessions += TARGET_RATE * args.seconds * ("hot" in shapes) + 1000  # the open loop
    rounds = max(2, math.ceil(hot_sessions / args.meters))
    load = Child(
        "load",
        ["load", "--meters", str(args.meters), "--cold", str(cold), "--rounds", str(rounds)],
        folder,
    )
    children = [load]
    try:
        started = time.perf_counter()  # the fleet provisioned while the frames are built
        provision(database, args.meters + cold)
        print(
            f"  setup     {args.meters:,} hot + {cold:,} cold meters and their keys provisioned"
            f" in {time.perf_counter() - started:.1f} s (COPY)"
        )
        children += [sac_child(args, database, folder), Child("peer", peer_args(args), folder)]
        for child in children:
            child.wait_ready()
        built = load.ready
        print(
            f"  frames    {built['frames']:,} pre-built ({rounds} a hot meter, 1 a cold one),"
            f" one CF47 of {built['frame_bytes']} bytes in {built['us_per_frame']:.0f} µs CPU;"
            f" ready {time.perf_counter() - started:.1f} s after the start"
            f" (the fleet's meters made in {built['fleet_seconds']:.1f} s)"
        )
        sac, peer = children[1], children[2]
        room = min(sac.ready["nofile"], load.ready["nofile"]) - args.concurrency - 200
        idle = args.idle
        if idle > room:
            print(f"  (RLIMIT_NOFILE allows {room:,} idle connections, not {idle:,})")
            idle = max(0, room)
        return measure(Run(args, database, sac, peer, load, folder, shapes), idle)
    finally:
        for child in children:
            child.stop()


SHAPES = {"cold": ("cold",), "hot": ("hot",), "both": ("cold", "hot")}


def fleet_size(args: argparse.Namespace) -> int:
    """Cold meters enough for each to push at most once in the measure (and the profile,
    which takes the rest of the cold fleet) at ``--cold-rate``."""
    return args.cold_meters or math.ceil(args.cold_rate * (args.seconds + args.profile))


def provision(database: Postgres, meters: int) -> None:
    done = subprocess.run(
        [sys.executable, str(HELPER), "provision", database.dsn, "--meters", str(meters)],
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode:
        raise ChildFailed(f"provision failed:\n{done.stderr.decode()[-2000:]}")


def sac_child(args: argparse.Namespace, database: Postgres, folder: Path) -> Child:
    max_sessions = max(20_000, args.idle + args.concurrency + 1000)
    return Child(
        "sac",
        [
            "sac",
            database.dsn,
            "--pool",
            str(args.pool),
            "--backlog",
            str(args.backlog),
            "--max-sessions",
            str(max_sessions),
            "--log",
            str(folder / "sac.log"),
        ],
        folder,
    )


def peer_args(args: argparse.Namespace) -> list[str]:
    return ["peer", "--backlog", str(args.backlog)]


class Run:
    """What the measures share: the options, the database and the three processes."""

    def __init__(
        self,
        args: argparse.Namespace,
        database: Postgres,
        sac: Child,
        peer: Child,
        load: Child,
        folder: Path,
        shapes: tuple[str, ...],
    ) -> None:
        self.args, self.database, self.folder, self.shapes = args, database, folder, shapes
        self.sac, self.peer, self.load = sac, peer, load
        self.acked = {shape: folder / f"acked-{shape}.tsv" for shape in ("cold", "hot")}
        for path in self.acked.values():
            path.touch()

    def flags(self, population: str = "hot") -> dict[str, Any]:
        """The SAC's sessions: each frame once, every acknowledged one recorded."""
        return {"cycle": False, "record": str(self.acked[population]), "population": population}

    def phase(self, server: Child, cursor: str, **kw: Any) -> dict[str, Any]:
        pid, is_sac = server.pid, server is self.sac
        cpu0, pg0, load0 = cpu_seconds(pid), postgres_cpu(), cpu_seconds(self.load.pid)
        kw.setdefault("concurrency", self.args.concurrency)
        kw.setdefault("seconds", self.args.seconds)
        before = server.ask(op="stats")
        if is_sac:
            server.ask(op="lag")  # from now on
        port = server.ready["port"]
        result = self.load.ask(op="sessions", port=port, cursor=cursor, **kw)
        result["lag"] = server.ask(op="lag") if is_sac else {}
        after = server.ask(op="stats")
        result["transactions"] = after.get("transactions", 0) - before.get("transactions", 0)
        result["lookups"] = after.get("lookups", 0) - before.get("lookups", 0)
        result["store"] = store_time(before.get("store", {}), after.get("store", {}))
        result["server_cpu"] = cpu_seconds(pid) - cpu0
        result["pg_cpu"] = max(0.0, postgres_cpu() - pg0)  # backends that ended: not counted
        result["load_cpu"] = cpu_seconds(self.load.pid) - load0
        result["rate"] = result["ok"] / result["elapsed"]
        result["cpu_us"] = result["server_cpu"] / max(result["ok"], 1) * 1e6
        return result


def describe(name: str, r: dict[str, Any], what: str) -> None:
    per = r["elapsed"]
    print(
        f"  {name:9} {r['rate']:8,.0f} {what}/s   p50 {ms(r['p50'])}   p99 {ms(r['p99'])}"
        f"   max {ms(r['max'])}   ({r['ok']:,} in {r['elapsed']:.1f} s;"
        f" refused {r['refused']}, failed {r['failed']}"
        + (f", {r['unfinished']:,} unfinished after 60 s" if r.get("unfinished") else "")
        + ")"
    )
    print(
        f"            CPU s/s: server {r['server_cpu'] / per:4.2f}"
        f" ({r['cpu_us']:4.0f} µs a session)"
        f"   load {r['load_cpu'] / per:4.2f}"
        f" ({r['load_cpu'] / max(r['ok'], 1) * 1e6:3.0f} µs)"
        f"   PostgreSQL {r['pg_cpu'] / per:4.2f}"
        + (
            f"   {r['ok'] / r['transactions']:.1f} sessions a transaction"
            if r.get("transactions")
            else ""
        )
    )
    if r.get("store"):  # where a session waits: the store's calls, how many and how long
        print(
            f"            {r['ok'] / max(r['lookups'], 1):.1f} sessions a meter lookup;"
            " store calls (count, mean ms): "
            + ", ".join(
                f"{name} {count:,.0f} x {total / count * 1000:.1f}"
                for name, (count, total) in sorted(r["store"].items(), key=lambda i: -i[1][1])[:4]
            )
        )


def store_time(
    before: dict[str, list[float]], after: dict[str, list[float]]
) -> dict[str, tuple[float, float]]:
    """{transaction: (how many, seconds in all)} run between two stats."""
    done = {}
    for name, (count, total) in after.items():
        count0, total0 = before.get(name, (0.0, 0.0))
        if count > count0:
            done[name] = (count - count0, total - total0)
    return done


def warm(run: Run) -> None:
    if not run.args.warmup:
        return
    for server, cursor, kw in (
        (run.peer, "peer", {"cycle": True}),
        (run.sac, "sac", run.flags()),
    ):
        run.load.ask(
            op="sessions",
            port=server.ready["port"],
            cursor=cursor,
            seconds=run.args.warmup,
            concurrency=run.args.concurrency,
            **kw,
        )


def closed_loops(run: Run) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The peer, then the SAC on each shape: (the peer's figures, the SAC's by shape)."""
    theirs = run.phase(run.peer, "peer", cycle=True)
    describe("peer", theirs, "connections")
    ours = {}
    for shape in run.shapes:
        rows0 = run.database.one("SELECT count(*) FROM readings")
        ours[shape] = r = run.phase(run.sac, "sac", **run.flags(shape))
        rows = run.database.one("SELECT count(*) FROM readings") - rows0
        describe(f"sac {shape}", r, "sessions")
        print(
            f"            {rows / r['elapsed']:8,.0f} readings/s stored"
            f" ({rows / max(r['ok'], 1):.1f} a session)   ratio to the peer"
            f" {r['rate'] / theirs['rate']:.2f}   SAC peak RSS {mib(memory(run.sac.pid)['VmHWM'])}"
        )
        if r.get("exhausted"):
            print(
                f"            every cold meter pushed within {r['elapsed']:.1f} s: the SAC"
                " took more than --cold-rate; a bigger --cold-meters measures the full time"
            )
    return theirs, ours


def table(theirs: dict[str, Any], ours: dict[str, dict[str, Any]], steady: Any) -> None:
    """Cold and hot side by side, with the peer."""
    rows = [("peer", theirs), *((f"sac {s}", r) for s, r in ours.items())]
    if steady is not None:
        rows.append((f"sac hot @{TARGET_RATE:,.0f}/s", steady))
    print(
        f"  {'':18} {'per s':>7} {'÷peer':>6} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7}"
        f"   loop lag: {'p99 ms':>7} {'max ms':>7} {'>20ms':>6} {'>100ms':>6} {'stalled':>8}"
    )
    for name, r in rows:
        lag = r.get("lag") or {}
        stalls = (
            f"{lag['p99'] * 1000:7.1f} {lag['max'] * 1000:7.1f} {lag['over_20ms']:6,}"
            f" {lag['over_100ms']:6,} {lag['stalled']:7.1f}s"
            if lag.get("probes")
            else f"{'-':>7} {'-':>7} {'-':>6} {'-':>6} {'-':>8}"
        )
        print(
            f"  {name:18} {r['rate']:7,.0f} {r['rate'] / theirs['rate']:6.2f}"
            f" {r['p50'] * 1000:7.1f} {r['p99'] * 1000:7.1f} {r['cpu_us']:7.0f}"
            f"             {stalls}"
        )
    print(
        "  (loop lag: how late a call due every 10 ms ran in the SAC's reactor; stalled: the"
        " time in lags over 20 ms; CPU µs: the server's user+sys over its sessions)"
    )


def profiled(run: Run) -> dict[str, Any] | None:
    if not run.args.profile:
        return None
    shape = run.shapes[0]  # cold, unless only hot is measured: the rest of the cold fleet
    run.sac.ask(op="profile-start")
    done = run.load.ask(
        op="sessions",
        port=run.sac.ready["port"],
        cursor="sac",
        seconds=run.args.profile,
        concurrency=run.args.concurrency,
        **run.flags(shape),
    )
    dump = run.args.profile_file or str(run.folder / "sac.prof")
    profile = run.sac.ask(op="profile-stop", path=dump, top=25)
    print(
        f"  profiled  {done['ok'] / done['elapsed']:8,.0f} {shape} sessions/s under cProfile"
        f" for {done['elapsed']:.1f} s"
    )
    return profile


def hold_idle(run: Run, idle: int) -> bool:
    """``idle`` silent connections held: all accepted and kept, a push still served."""
    sac, load = run.sac, run.load
    rss0 = memory(sac.pid)["VmRSS"]
    before = sac.ask(op="stats")["active"]
    opened = load.ask(op="idle-open", port=sac.ready["port"], count=idle, timeout=300)
    time.sleep(0.5)
    accepted = sac.ask(op="stats")["active"] - before
    time.sleep(run.args.hold)
    still = load.ask(op="idle-check")
    held = sac.ask(op="stats")["active"] - before
    probe = load.ask(
        op="sessions", port=sac.ready["port"], cursor="sac", count=20, concurrency=10, **run.flags()
    )
    rss = memory(sac.pid)["VmRSS"]
    late = load.ask(op="idle-check")
    load.ask(op="idle-release")
    print(
        f"  idle      {opened['held']:,} of {idle:,} connected in {opened['seconds']:.1f} s"
        f" (failed {opened['failed']}), {accepted:,} accepted by the SAC;"
        f" after {run.args.hold:g} s: {still['open']:,} open (SAC holds {held:,})"
    )
    print(
        f"            push sessions while held: {probe['ok']}/20 stored,"
        f" p99 {ms(probe['p99']).strip()}   SAC RSS {mib(rss)} (before {mib(rss0).strip()},"
        f" {(rss - rss0) / max(idle, 1) / 1024:.1f} KiB a connection)"
    )
    return accepted >= idle and still["open"] == idle and late["open"] == idle and probe["ok"] == 20


def drain(run: Run) -> dict[str, Any]:
    """The SAC's stats once its spool is replayed (what it acknowledged from its spool is
    stored only then: wait for that before looking for every push)."""
    drained = time.monotonic()
    while run.sac.ask(op="stats")["spooled"] and time.monotonic() - drained < 300:
        time.sleep(0.5)
    stats = run.sac.ask(op="stats")
    print(
        f"  spool     drained in {time.monotonic() - drained:.1f} s"
        f" ({stats['spooled']:,} pushes still on it)"
    )
    gc = stats.get("gc", {})
    if gc:
        print(
            "  SAC gc    "
            + ";  ".join(
                f"gen{g}: {gc.get(f'gen{g}_n', 0):,.0f} pauses, {gc.get(f'gen{g}_ms', 0):,.0f} ms"
                f" in all, longest {gc.get(f'gen{g}_max_ms', 0):.1f} ms"
                for g in range(3)
            )
        )
    return stats


def verify(run: Run, stats: dict[str, Any], idle: bool) -> dict[str, int]:
    """Every acknowledged session looked up in PostgreSQL: the ones lost, by shape."""
    lost = {}
    for shape, path in run.acked.items():
        total, lost[shape] = run.database.lost(path)
        if total:
            print(
                f"  verified  {shape}: {total:,} sessions acknowledged, {total - lost[shape]:,}"
                f" found in PostgreSQL, lost {lost[shape]}"
            )
    stored = stats["counters"].get("sac_push_stored_total", 0)
    all_rows = run.database.one("SELECT count(*) FROM readings")
    print(
        f"            the SAC counts {stored:,} pushes stored, {all_rows:,} readings rows,"
        f" {stats['transactions']:,} ingest transactions"
    )
    outcomes = {
        name.split("'outcome': '")[1].rstrip("'}"): value
        for name, value in stats["counters"].items()
        if name.startswith("sac_push_sessions_total")
    }
    refusals = {
        name: value
        for name, value in stats["counters"].items()
        if name.startswith(("sac_push_rejected_total", "sac_push_closed_total"))
    }
    print(
        f"            SAC session outcomes {outcomes}"
        + (" (closed-by-meter: the idle ones)" if idle else "")
        + f", refusals {refusals or 'none'}"
    )
    return lost


def read_log(folder: Path) -> None:
    lines = [  # the log file and those it was rotated into
        line
        for path in sorted(folder.glob("sac.log*"))
        if path.is_file()  # not sac.log.spool/
        for line in path.read_text().splitlines()
    ]
    sessions = sum("] push session from " in line for line in lines)
    worse = [
        line for line in lines if "#warn]" in line or "#error]" in line or "#critical]" in line
    ]
    print(f"            SAC log: {len(lines):,} lines, {sessions:,} of them push sessions")
    if worse:
        print(f"            SAC log: {len(worse)} warnings or errors, first: {worse[0][:160]}")


def measure(run: Run, idle: int) -> int:
    warm(run)
    theirs, ours = closed_loops(run)
    # open loop: meters calling in at the target rate, whatever the SAC does; the p99 that
    # counts is this one (at saturation, a closed loop's latency is its concurrency divided
    # by the rate: Little's law, not the SAC)
    steady = None
    if "hot" in run.shapes:
        flags = {**run.flags(), "concurrency": 4000}
        steady = run.phase(run.sac, "sac", rate=TARGET_RATE, **flags)
        describe(f"sac@{TARGET_RATE:,.0f}", steady, "sessions")
    table(theirs, ours, steady)
    profile = profiled(run)
    idle_ok = hold_idle(run, idle) if idle else None
    stats = drain(run)
    lost = verify(run, stats, idle_ok is not None)
    read_log(run.folder)
    verdicts(run, ours, steady, lost, idle_ok, idle)
    keep(run, theirs, ours, steady, lost)
    if profile is not None:
        print(f"SAC profile, {run.args.profile:g} s under load, top 25 by cumulative time:")
        print(_trim(profile["cumulative"]))
        print("top 25 by internal time:")
        print(_trim(profile["tottime"]))
    return 0 if not any(lost.values()) else 1


def verdicts(
    run: Run,
    ours: dict[str, dict[str, Any]],
    steady: dict[str, Any] | None,
    lost: dict[str, int],
    idle_ok: bool | None,
    idle: int,
) -> None:
    verdict = {True: "met", False: "NOT met"}
    parts = [
        f"{shape} {r['rate']:,.0f} {verdict[r['rate'] >= TARGET_RATE]}" for shape, r in ours.items()
    ]
    line = f"  target    >= {TARGET_RATE:,.0f} sessions/s durably stored: {', '.join(parts)}"
    if steady is not None:
        p99_ok = steady["p99"] < TARGET_P99 and steady["rate"] >= TARGET_RATE * 0.98
        line += (
            f";  p99 < {TARGET_P99 * 1000:.0f} ms at {TARGET_RATE:,.0f}/s (hot):"
            f" {steady['p99'] * 1000:.1f} ms {verdict[p99_ok]}"
        )
    total_lost = sum(lost.values())
    line += f";  lost 0: {total_lost} {verdict[total_lost == 0]}"
    if idle_ok is not None:
        line += f";  {idle:,} idle held: {verdict[idle_ok]}"
    print(line)
    print(f"            (SAC peak RSS over the run {mib(memory(run.sac.pid)['VmHWM']).strip()})")


def keep(
    run: Run,
    theirs: dict[str, Any],
    ours: dict[str, dict[str, Any]],
    steady: dict[str, Any] | None,
    lost: dict[str, int],
) -> None:
    """The run's figures and its ratios to the peer, in benchmarks/results/."""
    pick = ("rate", "p50", "p99", "max", "cpu_us", "ok", "elapsed", "pg_cpu", "lag")
    figures: dict[str, Any] = {"peer": {k: theirs[k] for k in pick if k in theirs}}
    ratios = {}
    for shape, r in ours.items():
        figures[shape] = {k: r[k] for k in pick if k in r}
        ratios[f"{shape} rate/peer"] = r["rate"] / theirs["rate"]
        ratios[f"{shape} peer CPU/sac CPU"] = theirs["cpu_us"] / max(r["cpu_us"], 1e-9)
    if steady is not None:
        figures["hot_open_loop"] = {k: steady[k] for k in pick if k in steady}
    figures["lost"] = lost
    args = run.args
    options = {
        "shape": args.shape,
        "meters": args.meters,
        "concurrency": args.concurrency,
        "pool": args.pool,
    }
    figures["cold_meters"] = fleet_size(args) if "cold" in run.shapes else 0
    figures["seconds"] = args.seconds
    results.record("push", options, figures, ratios)


def _trim(text: str) -> str:
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each measure (peer, sac)")
    parser.add_argument("--meters", type=int, default=2000, help="the hot meters, cycling")
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default="both", help="cold (the fleet's), hot or both"
    )
    parser.add_argument(
        "--cold-meters", type=int, default=0, help="the cold fleet (default --cold-rate x S)"
    )
    parser.add_argument(
        "--cold-rate",
        type=float,
        default=TARGET_RATE,
        help="sessions/s the cold fleet covers: each cold meter pushes once at most",
    )
    parser.add_argument("--concurrency", type=int, default=200, help="sessions in flight")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections held")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the idle ones are held")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the measures")
    parser.add_argument("--pool", type=int, default=4, help="the SAC's PostgreSQL connections")
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog of both servers")
    parser.add_argument(
        "--max-rate", type=float, default=2500.0, help="sessions/s the hot frames cover"
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, help="then cProfile the SAC for S seconds of load"
    )
    parser.add_argument("--profile-file", help="keep the SAC's cProfile dump (pstats) there")
    args = parser.parse_args()
    print(
        f"push benchmark, shape {args.shape}: {args.meters:,} hot meters, {args.concurrency}"
        f" sessions in flight,"
        f" {args.seconds:g} s a measure; 1 SAC process, 1 peer process, 1 load process,"
        f" {os.cpu_count()} CPUs"
    )
    try:
        database = Postgres()
    except psycopg2.OperationalError as exc:
        print(f"  skipped: no PostgreSQL server at {ADMIN_DSN}: {str(exc).strip()}")
        return 0
    try:
        settings = [
            f"{name}={database.one(f'SHOW {name}')}"
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        ]
        print(f"  postgres  {', '.join(settings)}; database {database.name}")
        with tempfile.TemporaryDirectory() as folder:
            return run(args, database, Path(folder))
    finally:
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
