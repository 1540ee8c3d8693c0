"""The processes of ``benchmarks/bench_push.py``, one subcommand each.

    provision DSN   the benchmark fleet's meters (one bulk INSERT) and keys
                    (``IKeys.import_rows`` in batches) in a fresh store, then exits
    sac DSN         the SAC: the service of ``twistd sac`` (push only, on a free port of
                    127.0.0.1), logging at info to a text file as in production
    peer            the bare Twisted server: accepts, reads one wrapper frame, closes
    load            the simulated meters: every meter's ciphered CF47 frames built in
                    advance (the simulator's own meter, clock and cipher), sessions driven
                    over epoll with plain non-blocking sockets

A child prints one JSON line when it is ready, then answers each JSON line on its stdin
with one JSON line on its stdout; it ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import datetime as dt
import errno
import io
import json
import os
import pstats
import resource
import select
import socket
import sys
import time
from typing import Any

BENCH_PROFILE = "uni-ts-11291-12-2"
TEMPLATE = 47
MASTER_HEX = "11" * 32
SEED = 7


def raise_nofile() -> int:
    """The soft limit of open files up to the hard one; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def reply(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def make_fleet(meters: int, clock: Any) -> Any:
    from sac.profiles import discover_profiles
    from sac.simulator.fleet import Fleet

    profile = discover_profiles().registry[BENCH_PROFILE]
    return Fleet(meters, profile, clock=clock, reactor=None, seed=SEED)


# --- provision ------------------------------------------------------------------------------


def provision(args: argparse.Namespace) -> None:
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    async def run(reactor: Any) -> None:
        import psycopg2
        from psycopg2.extras import execute_values

        from sac.keys import MasterKey
        from sac.store.keycsv import parse_key_csv
        from sac.store.postgres import PostgresStore

        start = time.perf_counter()
        fleet = make_fleet(args.meters, time.time)
        store = PostgresStore(args.dsn, MasterKey.from_text(MASTER_HEX), reactor=reactor)
        await store.open()
        now = dt.datetime.now(dt.UTC)
        conn = psycopg2.connect(args.dsn)
        with conn, conn.cursor() as cursor:
            execute_values(
                cursor,
                "INSERT INTO meters (ldn, pdr, system_title, profile, created, updated) VALUES %s",
                [(m.ldn, m.pdr, m.system_title, BENCH_PROFILE, now, now) for m in fleet.meters],
                page_size=2000,
            )
            cursor.execute("ANALYZE meters")
        conn.close()
        rows, errors = parse_key_csv(fleet.keys_csv())
        if errors:
            raise SystemExit(f"key CSV: {errors[:3]}")
        for i in range(0, len(rows), 2000):
            await store.keys.import_rows(rows[i : i + 2000])
        await store.close()
        reply({"meters": len(fleet.meters), "seconds": time.perf_counter() - start})

    react(lambda reactor: ensureDeferred(run(reactor)))


# --- the SAC and the bare peer: Twisted, controlled over stdio ------------------------------


def serve(build: Any) -> None:
    """Run ``build(reactor)`` -> (ready dict, command handler) and answer commands."""
    from twisted.internet import reactor, stdio
    from twisted.internet.defer import Deferred, maybeDeferred
    from twisted.protocols.basic import LineReceiver

    class Control(LineReceiver):
        delimiter = b"\n"

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def lineReceived(self, line: bytes) -> None:
            d = maybeDeferred(self.handle, json.loads(line))
            d.addErrback(lambda f: {"error": f"{f.type.__name__}: {f.value}"})
            d.addCallback(lambda answer: self.sendLine(json.dumps(answer).encode()))

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    async def start() -> None:
        ready, handle = await build(reactor)
        reply(ready)
        stdio.StandardIO(Control(handle), reactor=reactor)

    def failed(failure: Any) -> None:
        reply({"error": f"{failure.type.__name__}: {failure.value}"})
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(start()).addErrback(failed))
    reactor.run()


def gc_pauses() -> dict[str, float]:
    """The garbage collector's pauses, by generation: count, total and longest (ms)."""
    import gc

    pauses: dict[str, float] = {}
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - started[0]) * 1000
        g = info["generation"]
        pauses[f"gen{g}_n"] = pauses.get(f"gen{g}_n", 0) + 1
        pauses[f"gen{g}_ms"] = pauses.get(f"gen{g}_ms", 0.0) + took
        pauses[f"gen{g}_max_ms"] = max(pauses.get(f"gen{g}_max_ms", 0.0), took)

    gc.callbacks.append(watch)
    return pauses


def sac(args: argparse.Namespace) -> None:
    from prometheus_client import Counter
    from twisted.logger import globalLogBeginner

    from sac.config import load_config
    from sac.logs import make_observer
    from sac.services.metrics import DECLARED
    from sac.tap import SacService

    # the production log: one text line a session at info, to a file
    globalLogBeginner.beginLoggingTo(
        [make_observer("text", "info", args.log)], redirectStandardIO=False
    )
    nofile = raise_nofile()
    config = load_config(
        None,
        {
            "SAC_MASTER_KEY": MASTER_HEX,
            "SAC_STORE_ADDRESS": args.dsn,
            "SAC_STORE_CONNECTIONS": str(args.pool),
            "SAC_PUSH_LISTEN": f"tcp:0:interface=127.0.0.1:backlog={args.backlog}",
            "SAC_PUSH_SPOOL": args.log + ".spool",
            "SAC_PUSH_IDLE_TIMEOUT": str(args.idle_timeout),
            "SAC_PUSH_PUSH_WITHIN": str(args.idle_timeout),  # the held idle connections too
            "SAC_PUSH_SESSION_TIMEOUT": str(min(3600, args.idle_timeout * 2)),
            "SAC_PUSH_MAX_SESSIONS": str(args.max_sessions),
            # the load generator pushes and reads no request: the push path alone is measured
            # here (a session with the read plan: benchmarks/bench_plan.py)
            "SAC_PUSH_READ_PLAN": "no",
            "SAC_POLL_ENABLED": "no",
            "SAC_WEB_LISTEN": "",
            "SAC_SAC_NAME": "bench-push",
        },
    )

    async def build(reactor: Any) -> tuple[dict[str, Any], Any]:
        service = SacService(config, reactor=reactor, exit_on_failure=False)  # twistd sac's
        service.startService()
        await service.ready
        acquisition, factory, port = service.acquisition, service.push, service.push_ports[0]
        profiler: list[cProfile.Profile] = []
        pauses = gc_pauses()

        def handle(command: dict[str, Any]) -> dict[str, Any]:
            op = command["op"]
            metrics = acquisition.metrics
            if op == "stats":
                return {
                    "active": len(factory.active),
                    "spooled": acquisition.spool.depth if acquisition.spool is not None else 0,
                    "transactions": acquisition.writer.transactions,
                    "gc": pauses,
                    "counters": {
                        f"{name}{labels if labels else ''}": int(value)
                        for name, declared in DECLARED.items()
                        if declared.kind is Counter
                        for labels, value in metrics.samples(name)
                    },
                }
            if op == "profile-start":
                profiler.append(cProfile.Profile())
                profiler[-1].enable()
                return {"profiling": True}
            if op == "profile-stop":
                prof = profiler.pop()
                prof.disable()
                prof.dump_stats(command["path"])
                texts = {}
                for order in ("cumulative", "tottime"):
                    out = io.StringIO()
                    stats = pstats.Stats(prof, stream=out)
                    stats.strip_dirs().sort_stats(order).print_stats(command.get("top", 25))
                    texts[order] = out.getvalue()
                return texts
            raise ValueError(f"unknown command {op!r}")

        ready = {"port": port.getHost().port, "pid": os.getpid(), "nofile": nofile}
        return ready, handle

    serve(build)


def peer(args: argparse.Namespace) -> None:
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    nofile = raise_nofile()

    class Bare(Protocol):
        """Accept, read one wrapper frame (8-byte header, then its length), close."""

        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if len(self.buffer) >= 8 and len(self.buffer) >= 8 + int.from_bytes(
                self.buffer[6:8], "big"
            ):
                self.factory.frames += 1
                self.transport.loseConnection()

    class BareFactory(Factory):
        noisy = False
        protocol = Bare
        frames = 0

    async def build(reactor: Any) -> tuple[dict[str, Any], Any]:
        factory = BareFactory()
        endpoint = TCP4ServerEndpoint(reactor, 0, backlog=args.backlog, interface="127.0.0.1")
        port = await endpoint.listen(factory)

        def handle(command: dict[str, Any]) -> dict[str, Any]:
            return {"frames": factory.frames}

        return {"port": port.getHost().port, "pid": os.getpid(), "nofile": nofile}, handle

    serve(build)


# --- the load: pre-built frames, plain sockets, one epoll -----------------------------------


class Frames:
    """Each meter's push frames, in counter order: frame k of a meter is its push at
    ``base + k`` UNIX seconds with its k-th invocation counter after the first."""

    def __init__(self, meters: int) -> None:
        self.base = int(time.time())
        self._now = float(self.base)
        self.fleet = make_fleet(meters, lambda: self._now)
        self.meters = self.fleet.meters
        self.ldns = [m.ldn for m in self.meters]
        self.frames: list[list[bytes]] = [[] for _ in self.meters]
        self.built_late = 0  # frames built during a measure (the supply ran out)

    def build(self, i: int) -> bytes:
        from sac.dlms.axdr import OctetString
        from sac.dlms.security import SecurityContext, Suite0Cipher
        from sac.dlms.server import ServerAssociation
        from sac.simulator.meter import MANAGEMENT

        m, frames = self.meters[i], self.frames[i]
        self._now = float(self.base + len(frames))
        m.advance()
        buffer = m.compact_buffer(TEMPLATE)
        security = SecurityContext(
            Suite0Cipher(m.key), m.system_title, invocation_counter=m.our_counter
        )
        association = ServerAssociation(m, MANAGEMENT, 1, security=security, pre_established=True)
        association.notify(OctetString(buffer))
        m.our_counter = security.invocation_counter
        frame = association.data_to_send()
        frames.append(frame)
        return frame

    def rounds(self, count: int) -> None:
        for _ in range(count):
            for i in range(len(self.meters)):
                self.build(i)

    def get(self, i: int, k: int, cycle: bool) -> bytes:
        frames = self.frames[i]
        if k < len(frames):
            return frames[k]
        if cycle:
            return frames[k % len(frames)]
        while len(frames) <= k:
            self.build(i)
            self.built_late += 1
        return frames[k]


EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
BROKEN = select.EPOLLERR | select.EPOLLHUP


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sessions(
    frames: Frames,
    cursor: list[int],
    port: int,
    *,
    seconds: float = 0.0,
    count: int = 0,
    concurrency: int,
    cycle: bool,
    record: str | None = None,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Push sessions for ``seconds`` (or ``count`` sessions), each meter one session at a
    time in turn: connect, send its next frame, wait for the close.  A clean close (FIN) is
    an acknowledgement; a reset is a refusal.

    Closed loop (``rate`` 0): ``concurrency`` sessions at once, a new one as soon as one
    ends -- the most the server takes.  Open loop (``rate`` > 0): sessions start at
    ``rate`` a second whatever the server does, as meters calling in do (``concurrency``
    only caps them); a session's time counts from when it was due, so a server that falls
    behind shows it in the percentiles instead of slowing the arrivals."""
    address = ("127.0.0.1", port)
    poller = select.epoll()
    idle = collections.deque(range(len(frames.meters)))
    live: dict[int, list[Any]] = {}  # fd: [socket, meter, k, start, frame not sent yet]
    latencies: list[float] = []
    acked: list[tuple[int, int]] = []
    refused = failed = started = 0
    clock = time.perf_counter
    cpu0 = time.process_time()
    begin = clock()
    deadline = begin + seconds if seconds else float("inf")
    due = begin  # open loop: when the next session is due
    gap = 1.0 / rate if rate else 0.0

    def finish(fd: int, entry: list[Any]) -> None:
        poller.unregister(fd)
        entry[0].close()
        del live[fd]
        idle.append(entry[1])

    while True:
        now = clock()
        while (
            len(live) < concurrency
            and idle
            and (now < deadline if seconds else started < count)
            and (not rate or due <= now)
        ):
            i = idle.popleft()
            k = cursor[i]
            cursor[i] = k + 1
            frame = frames.get(i, k, cycle)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            started += 1
            t0 = due if rate else clock()
            due += gap
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                failed += 1
                idle.append(i)
                continue
            fd = sock.fileno()
            live[fd] = [sock, i, k, t0, frame]
            poller.register(fd, EPOLLOUT)
            now = clock()
        if not live:
            if not idle or (seconds and clock() >= deadline) or (not seconds and started >= count):
                break
            if not rate:
                continue
        wait = min(0.5, max(0.001, due - clock())) if rate else 0.5
        for fd, event in poller.poll(wait):
            entry = live[fd]
            sock = entry[0]
            if entry[4] is not None:  # connecting
                if event & BROKEN and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    failed += 1
                    finish(fd, entry)
                    continue
                try:
                    sock.send(entry[4])
                except OSError:
                    failed += 1
                    finish(fd, entry)
                    continue
                entry[4] = None
                poller.modify(fd, EPOLLIN)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = None
            if data:
                continue  # the SAC said something (no command waits: it should not)
            end = clock()
            finish(fd, entry)
            if data is None:
                refused += 1
            else:
                latencies.append(end - entry[3])
                acked.append((entry[1], entry[2]))
    elapsed = clock() - begin
    cpu = time.process_time() - cpu0
    poller.close()
    if record:
        with open(record, "a") as out:
            out.writelines(f"{frames.ldns[i]}\t{frames.base + k}\n" for i, k in acked)
    return {
        "ok": len(acked),
        "refused": refused,
        "failed": failed,
        "elapsed": elapsed,
        "load_cpu": cpu,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
        "built_late": frames.built_late,
    }


class Idle:
    """Connections opened and left silent: how many the SAC accepts and keeps."""

    def __init__(self) -> None:
        self.poller = select.epoll()
        self.held: dict[int, socket.socket] = {}
        self.closed: set[int] = set()

    def open(self, port: int, count: int, at_once: int = 500) -> dict[str, Any]:
        address = ("127.0.0.1", port)
        connecting: dict[int, socket.socket] = {}
        failed = opened = 0
        begin = time.perf_counter()
        while opened < count or connecting:
            while opened < count and len(connecting) < at_once:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                opened += 1
                if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                    sock.close()
                    failed += 1
                    continue
                connecting[sock.fileno()] = sock
                self.poller.register(sock.fileno(), EPOLLOUT)
            for fd, _event in self.poller.poll(1.0):
                sock = connecting.pop(fd, None)
                if sock is None:
                    self.closed.add(fd)  # a held one that moved
                    self.poller.unregister(fd)
                    continue
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.poller.unregister(fd)
                    sock.close()
                    failed += 1
                    continue
                self.held[fd] = sock
                self.poller.modify(fd, EPOLLIN | select.EPOLLRDHUP)
        return {"held": len(self.held), "failed": failed, "seconds": time.perf_counter() - begin}

    def check(self) -> dict[str, Any]:
        for fd, _event in self.poller.poll(0):
            self.closed.add(fd)  # data, FIN or reset: no longer an idle open connection
            self.poller.unregister(fd)
        return {"open": len(self.held) - len(self.closed), "closed": len(self.closed)}

    def release(self) -> dict[str, Any]:
        for sock in self.held.values():
            sock.close()
        n = len(self.held)
        self.held.clear()
        self.closed.clear()
        return {"released": n}


def load(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    start, cpu0 = time.perf_counter(), time.process_time()
    frames = Frames(args.meters)
    frames.rounds(args.rounds)
    built = len(frames.meters) * args.rounds
    cpu = time.process_time() - cpu0
    reply(
        {
            "pid": os.getpid(),
            "nofile": nofile,
            "frames": built,
            "seconds": time.perf_counter() - start,
            "us_per_frame": cpu / max(built, 1) * 1e6,
            "frame_bytes": len(frames.frames[0][0]),
        }
    )
    cursors: dict[str, list[int]] = {}
    idle = Idle()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "sessions":
            cursor = cursors.setdefault(command.pop("cursor"), [0] * len(frames.meters))
            reply(sessions(frames, cursor, **command))
        elif op == "idle-open":
            reply(idle.open(**command))
        elif op == "idle-check":
            reply(idle.check())
        elif op == "idle-release":
            reply(idle.release())
        else:
            reply({"error": f"unknown command {op!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("provision")
    p.add_argument("dsn")
    p.add_argument("--meters", type=int, required=True)
    p = sub.add_parser("sac")
    p.add_argument("dsn")
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--idle-timeout", type=float, default=600.0)
    p.add_argument("--max-sessions", type=int, default=20_000)
    p.add_argument("--log", required=True)
    p = sub.add_parser("peer")
    p.add_argument("--backlog", type=int, default=1024)
    p = sub.add_parser("load")
    p.add_argument("--meters", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    {"provision": provision, "sac": sac, "peer": peer, "load": load}[args.command](args)


if __name__ == "__main__":
    main()
