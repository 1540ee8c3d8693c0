"""Push benchmark: sessions per second durably stored by one SAC process on PostgreSQL.

    peer     a bare Twisted server (its own process) that accepts, reads one wrapper frame
             and closes: the transport ceiling, in connections/s, for the same load
             generator sending the same frames, measured in the same run
    sac      one SAC process (the service of ``twistd sac``, logging a line a session at info)
             with N provisioned meters; the simulated meters in another
             process call in, ``--concurrency`` sessions at once, each meter one session at
             a time: connect, push one ciphered CF47 frame, wait for the SAC's clean close
             (it stores before it closes).  Sessions/s and readings/s stored, p50/p99 of
             connect-to-close, the SAC's CPU (user+sys, /proc) and peak RSS; afterwards
             every acknowledged session is looked up in PostgreSQL: lost must be 0
    idle     ``--idle`` connections opened and left silent: all accepted (the SAC's count),
             all still open after ``--hold`` seconds, a push session still served meanwhile,
             the SAC's RSS with them held

The load generator pre-builds every meter's frames with the simulator's own meter and cipher
(invocation counters rising session after session; frame k of a meter is its push at
k seconds after the start, so no two sessions of a meter carry the same readings) and drives
plain non-blocking sockets over epoll: a session costs it a few syscalls, not a frame build.
The target: >= 2,100 push sessions/s durably stored, p99 < 250 ms, nothing lost.  Run:
``.venv/bin/python benchmarks/bench_push.py [--seconds S] [--meters N] [--concurrency C]
[--idle N] [--profile S]``.  PostgreSQL is the server of $SAC_TEST_PG (default 127.0.0.1:5432,
user postgres); a fresh database is made and dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from bench_store import ADMIN_DSN
from bench_store import Postgres as BenchDatabase

HELPER = Path(__file__).with_name("push_sac.py")
ROOT = HELPER.parent.parent
TICK = os.sysconf("SC_CLK_TCK")
INDEX = "7.0.13.2.0.255"  # the frame's volume index, captured at the frame's time
TARGET_RATE, TARGET_P99 = 2100.0, 0.250


# --- PostgreSQL -----------------------------------------------------------------------------


class Postgres(BenchDatabase):
    """bench_store's throwaway database, with the checks this benchmark makes."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = self.connect()
        self.conn.autocommit = True

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def lost(self, acked: Path) -> tuple[int, int]:
        """(sessions acknowledged, those whose frame's index reading is not in the store)."""
        with self.conn.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE acked (ldn TEXT, t BIGINT)")
            with acked.open() as f:
                cursor.copy_from(f, "acked", columns=("ldn", "t"))
            cursor.execute("SELECT count(*) FROM acked")
            total = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FROM acked a WHERE NOT EXISTS (SELECT 1 FROM readings r"
                " JOIN meters m ON m.id = r.meter_id WHERE m.ldn = a.ldn AND r.obis = %s"
                " AND r.attribute = 2 AND r.captured = to_timestamp(a.t))",
                (INDEX,),
            )
            return total, cursor.fetchone()[0]

    def drop(self) -> None:
        self.conn.close()
        super().drop()


# --- the processes --------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


class Child:
    """A helper process answering JSON lines; its first line says it is ready."""

    def __init__(self, name: str, args: list[str], folder: Path, timeout: float = 300) -> None:
        self.name = name
        self.err = folder / f"{name}.stderr"
        with self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HELPER), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
            )
        self.pid = self.proc.pid
        self._buffer = b""
        self.ready: dict[str, Any] = {}
        self._timeout = timeout

    def wait_ready(self) -> dict[str, Any]:
        self.ready = self.read(self._timeout)
        return self.ready

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{self.name}: no answer within {timeout:g} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    tail = self.err.read_text()[-2000:]
                    raise ChildFailed(f"{self.name} ended:\n{tail}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise ChildFailed(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, timeout: float = 600, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1]) * 1024
    return out


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres (server, backends, WAL writer...)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(entry))
        except OSError:
            continue
    return total


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:6.1f} MiB"


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, database: Postgres, folder: Path) -> int:
    acked = folder / "acked.tsv"
    acked.touch()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HELPER), "provision", database.dsn, "--meters", str(args.meters)],
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode:
        raise ChildFailed(f"provision failed:\n{done.stderr.decode()[-2000:]}")
    print(
        f"  setup     {args.meters:,} meters and keys provisioned in"
        f" {time.perf_counter() - started:.1f} s (bulk INSERT, import_keys in batches)"
    )

    sessions_guess = args.max_rate * (args.seconds + args.warmup + args.profile) + 1000
    sessions_guess += TARGET_RATE * args.seconds  # the open-loop measure
    rounds = max(2, math.ceil(sessions_guess / args.meters))
    max_sessions = max(20_000, args.idle + args.concurrency + 1000)
    children = [
        Child(
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
        ),
        Child("peer", ["peer", "--backlog", str(args.backlog)], folder),
        Child("load", ["load", "--meters", str(args.meters), "--rounds", str(rounds)], folder),
    ]
    sac, peer, load = children
    try:
        for child in children:
            child.wait_ready()
        built = load.ready
        print(
            f"  frames    {built['frames']:,} pre-built ({rounds} a meter), one CF47 of"
            f" {built['frame_bytes']} bytes in {built['us_per_frame']:.0f} µs CPU"
            f" ({built['seconds']:.1f} s)"
        )
        idle = args.idle
        room = min(sac.ready["nofile"], load.ready["nofile"]) - args.concurrency - 200
        if idle > room:
            print(f"  (RLIMIT_NOFILE allows {room:,} idle connections, not {idle:,})")
            idle = max(0, room)
        return measure(args, database, sac, peer, load, acked, idle, folder)
    finally:
        for child in children:
            child.stop()


def phase(
    load: Child, server: Child, port: int, cursor: str, args: argparse.Namespace, **kw: Any
) -> dict[str, Any]:
    pid = server.pid
    cpu0, pg0, load0 = cpu_seconds(pid), postgres_cpu(), cpu_seconds(load.pid)
    kw.setdefault("concurrency", args.concurrency)
    tx0 = server.ask(op="stats").get("transactions", 0)
    result = load.ask(op="sessions", port=port, cursor=cursor, seconds=args.seconds, **kw)
    result["transactions"] = server.ask(op="stats").get("transactions", 0) - tx0
    result["server_cpu"] = cpu_seconds(pid) - cpu0
    result["pg_cpu"] = max(0.0, postgres_cpu() - pg0)  # backends that ended are not counted
    result["load_cpu"] = cpu_seconds(load.pid) - load0
    result["rate"] = result["ok"] / result["elapsed"]
    return result


def describe(name: str, r: dict[str, Any], what: str) -> None:
    per = r["elapsed"]
    print(
        f"  {name:9} {r['rate']:8,.0f} {what}/s   p50 {ms(r['p50'])}   p99 {ms(r['p99'])}"
        f"   max {ms(r['max'])}   ({r['ok']:,} in {r['elapsed']:.1f} s;"
        f" refused {r['refused']}, failed {r['failed']})"
    )
    print(
        f"            CPU s/s: server {r['server_cpu'] / per:4.2f}"
        f" ({r['server_cpu'] / max(r['ok'], 1) * 1e6:4.0f} µs a session)"
        f"   load {r['load_cpu'] / per:4.2f}"
        f" ({r['load_cpu'] / max(r['ok'], 1) * 1e6:3.0f} µs)"
        f"   PostgreSQL {r['pg_cpu'] / per:4.2f}"
        + (
            f"   {r['ok'] / r['transactions']:.1f} sessions a transaction"
            if r.get("transactions")
            else ""
        )
    )


def measure(
    args: argparse.Namespace,
    database: Postgres,
    sac: Child,
    peer: Child,
    load: Child,
    acked: Path,
    idle: int,
    folder: Path,
) -> int:
    sac_port, peer_port = sac.ready["port"], peer.ready["port"]
    flags = {"cycle": False, "record": str(acked)}
    if args.warmup:
        for port, cursor, kw in (
            (peer_port, "peer", {"cycle": True}),
            (sac_port, "sac", flags),
        ):
            load.ask(
                op="sessions",
                port=port,
                cursor=cursor,
                seconds=args.warmup,
                concurrency=args.concurrency,
                **kw,
            )

    theirs = phase(load, peer, peer_port, "peer", args, cycle=True)
    describe("peer", theirs, "connections")

    rows0 = database.one("SELECT count(*) FROM readings")
    ours = phase(load, sac, sac_port, "sac", args, **flags)
    rows = database.one("SELECT count(*) FROM readings") - rows0
    readings_rate = rows / ours["elapsed"]
    describe("sac", ours, "sessions")
    peak = memory(sac.pid)["VmHWM"]
    print(
        f"            {readings_rate:8,.0f} readings/s stored"
        f" ({rows / max(ours['ok'], 1):.1f} a session)   ratio to the peer"
        f" {ours['rate'] / theirs['rate']:.2f}   SAC peak RSS {mib(peak)}"
    )

    # open loop: meters calling in at the target rate, whatever the SAC does; the p99 that
    # counts is this one (at saturation, a closed loop's latency is its concurrency divided
    # by the rate: Little's law, not the SAC)
    steady = phase(
        load, sac, sac_port, "sac", args, rate=TARGET_RATE, **{**flags, "concurrency": 4000}
    )
    describe(f"sac@{TARGET_RATE:,.0f}", steady, "sessions")

    profile = None
    if args.profile:
        sac.ask(op="profile-start")
        profiled = load.ask(
            op="sessions",
            port=sac_port,
            cursor="sac",
            seconds=args.profile,
            concurrency=args.concurrency,
            **flags,
        )
        dump = args.profile_file or str(folder / "sac.prof")
        profile = sac.ask(op="profile-stop", path=dump, top=25)
        print(
            f"  profiled  {profiled['ok'] / profiled['elapsed']:8,.0f} sessions/s under cProfile"
            f" for {profiled['elapsed']:.1f} s"
        )

    idle_result = None
    if idle:
        rss0 = memory(sac.pid)["VmRSS"]
        before = sac.ask(op="stats")["active"]
        opened = load.ask(op="idle-open", port=sac_port, count=idle, timeout=300)
        time.sleep(0.5)
        accepted = sac.ask(op="stats")["active"] - before
        time.sleep(args.hold)
        still = load.ask(op="idle-check")
        held = sac.ask(op="stats")["active"] - before
        probe = load.ask(
            op="sessions", port=sac_port, cursor="sac", count=20, concurrency=10, **flags
        )
        rss = memory(sac.pid)["VmRSS"]
        late = load.ask(op="idle-check")
        load.ask(op="idle-release")
        idle_result = (opened, accepted, still, held, probe, rss, rss0, late)
        print(
            f"  idle      {opened['held']:,} of {idle:,} connected in {opened['seconds']:.1f} s"
            f" (failed {opened['failed']}), {accepted:,} accepted by the SAC;"
            f" after {args.hold:g} s: {still['open']:,} open (SAC holds {held:,})"
        )
        print(
            f"            push sessions while held: {probe['ok']}/20 stored,"
            f" p99 {ms(probe['p99']).strip()}   SAC RSS {mib(rss)} (before {mib(rss0).strip()},"
            f" {(rss - rss0) / max(idle, 1) / 1024:.1f} KiB a connection)"
        )
        peak = memory(sac.pid)["VmHWM"]

    # what the SAC acknowledged from its spool (the store was slower than store_timeout) is
    # stored once the spool is replayed: wait for that before looking for every push
    drained = time.monotonic()
    while sac.ask(op="stats")["spooled"] and time.monotonic() - drained < 300:
        time.sleep(0.5)
    stats = sac.ask(op="stats")
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
    total, lost = database.lost(acked)
    stored = stats["counters"].get("sac_push_stored_total", 0)
    all_rows = database.one("SELECT count(*) FROM readings")
    print(
        f"  verified  {total:,} sessions acknowledged in all, {total - lost:,} found in"
        f" PostgreSQL, lost {lost}; the SAC counts {stored:,} pushes stored,"
        f" {all_rows:,} readings rows, {stats['transactions']:,} ingest transactions"
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
        + (" (closed-by-meter: the idle ones)" if idle_result else "")
        + f", refusals {refusals or 'none'}"
    )
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

    rate_ok = ours["rate"] >= TARGET_RATE
    p99_ok = steady["p99"] < TARGET_P99 and steady["rate"] >= TARGET_RATE * 0.98
    idle_ok = idle_result is None or (
        idle_result[1] >= idle
        and idle_result[2]["open"] == idle
        and idle_result[7]["open"] == idle
        and idle_result[4]["ok"] == 20
    )
    verdict = {True: "met", False: "NOT met"}
    print(
        f"  target    >= {TARGET_RATE:,.0f} sessions/s durably stored: {ours['rate']:,.0f}"
        f" {verdict[rate_ok]};  p99 < {TARGET_P99 * 1000:.0f} ms at {TARGET_RATE:,.0f}/s:"
        f" {steady['p99'] * 1000:.1f} ms"
        f" {verdict[p99_ok]};  lost 0: {lost} {verdict[lost == 0]}"
        + (f";  {idle:,} idle held: {verdict[idle_ok]}" if idle_result else "")
    )
    print(f"            (SAC peak RSS over the run {mib(peak).strip()})")
    if profile is not None:
        print(f"SAC profile, {args.profile:g} s under load, top 25 by cumulative time:")
        print(_trim(profile["cumulative"]))
        print("top 25 by internal time:")
        print(_trim(profile["tottime"]))
    return 0 if lost == 0 else 1


def _trim(text: str) -> str:
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each measure (peer, sac)")
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200, help="sessions in flight")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections held")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the idle ones are held")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the measures")
    parser.add_argument("--pool", type=int, default=4, help="the SAC's PostgreSQL connections")
    parser.add_argument("--backlog", type=int, default=1024, help="listen backlog of both servers")
    parser.add_argument(
        "--max-rate", type=float, default=3000.0, help="sessions/s the pre-built frames cover"
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, help="then cProfile the SAC for S seconds of load"
    )
    parser.add_argument("--profile-file", help="keep the SAC's cProfile dump (pstats) there")
    args = parser.parse_args()
    print(
        f"push benchmark: {args.meters:,} meters, {args.concurrency} sessions in flight,"
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
