"""The processes of ``benchmarks/bench_push.py``, one subcommand each.

    provision DSN   the benchmark fleet's meters and their keys (wrapped under the master
                    key as the store wraps them) in a fresh store, one COPY a table
    sac DSN         the SAC: the service of ``twistd sac`` (push only, on a free port of
                    127.0.0.1), logging at info to a text file as in production; a probe
                    every 10 ms measures its reactor's lag (``{"op": "lag"}``)
    peer            the bare Twisted server: accepts, reads one wrapper frame, closes
    load            the simulated meters (``push_load.py``): hot meters pushing again and
                    again, cold ones once each, every frame built in advance

A child prints one JSON line when it is ready, then answers each JSON line on its stdin
with one JSON line on its stdout; it ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import resource
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
        from sac.keys import MasterKey
        from sac.store.postgres import PostgresStore

        start = time.perf_counter()
        fleet = make_fleet(args.meters, time.time)
        store = PostgresStore(args.dsn, MasterKey.from_text(MASTER_HEX), reactor=reactor)
        await store.open()  # the schema, migrated
        await store.close()
        copy_fleet(args.dsn, fleet.meters, MasterKey.from_text(MASTER_HEX))
        reply({"meters": len(fleet.meters), "seconds": time.perf_counter() - start})

    react(lambda reactor: ensureDeferred(run(reactor)))


def copy_fleet(dsn: str, meters: list[Any], master: Any) -> None:
    """The meters, then their Management keys wrapped as the store wraps them, each table
    in one COPY: tens of thousands of meters in seconds (the store's import path writes a
    key a statement, minutes for a fleet this size)."""
    import psycopg2

    from sac.keys import key_place

    now = dt.datetime.now(dt.UTC).isoformat()
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cursor:
        rows = (
            f"{m.ldn}\t{m.pdr}\t\\\\x{m.system_title.hex()}\t{BENCH_PROFILE}\t{now}\t{now}\n"
            for m in meters
        )
        columns = ("ldn", "pdr", "system_title", "profile", "created", "updated")
        cursor.copy_from(io.StringIO("".join(rows)), "meters", columns=columns)
        cursor.execute("SELECT ldn, id FROM meters")
        ids = dict(cursor.fetchall())
        keys = io.StringIO()
        for m in meters:
            for role in ("ek", "ak"):  # AK = EK, as the fleet's key CSV says
                wrapped = master.wrap(m.key, key_place(m.ldn, 1, role))
                keys.write(f"{ids[m.ldn]}\t1\t{role}\t\\\\x{wrapped.hex()}\t{now}\n")
        keys.seek(0)
        columns = ("meter_id", "client_sap", "role", "wrapped", "updated")
        cursor.copy_from(keys, "meter_keys", columns=columns)
        cursor.execute("ANALYZE meters")
        cursor.execute("ANALYZE meter_keys")
    conn.close()


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


def store_seconds(metrics: Any) -> dict[str, list[float]]:
    """{transaction: [how many, seconds in all]} of the store's transactions so far."""
    found: dict[str, list[float]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name in ("sac_store_seconds_count", "sac_store_seconds_sum"):
                entry = found.setdefault(sample.labels["transaction"], [0.0, 0.0])
                entry[sample.name.endswith("_sum")] = sample.value
    return found


class LagProbe:
    """The reactor's stalls, seen from inside: a call due every ``every`` seconds notes how
    late it ran (the loop lag: a callback, a GC pause or a busy CPU held the reactor)."""

    def __init__(self, reactor: Any, every: float = 0.010) -> None:
        self.reactor, self.every = reactor, every
        self.lags: list[float] = []
        self._due = reactor.seconds() + every
        self._call = reactor.callLater(every, self._tick)

    def _tick(self) -> None:
        now = self.reactor.seconds()
        self.lags.append(max(0.0, now - self._due))
        self._due = now + self.every
        self._call = self.reactor.callLater(self.every, self._tick)

    def take(self) -> dict[str, Any]:
        """The lags since the last take: percentiles, longest, and the time lost in stalls."""
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return {"probes": 0}

        def at(q: float) -> float:
            return lags[min(len(lags) - 1, int(q * len(lags)))]

        return {
            "probes": len(lags),
            "p50": at(0.50),
            "p99": at(0.99),
            "max": lags[-1],
            "over_20ms": sum(lag > 0.020 for lag in lags),
            "over_100ms": sum(lag > 0.100 for lag in lags),
            "stalled": sum(lag for lag in lags if lag > 0.020),
        }


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
            "SAC_SAC_NAME": args.name,
        },
    )

    async def build(reactor: Any) -> tuple[dict[str, Any], Any]:
        service = SacService(config, reactor=reactor, exit_on_failure=False)  # twistd sac's
        service.startService()
        await service.ready
        acquisition, factory, port = service.acquisition, service.push, service.push_ports[0]
        profiler: list[cProfile.Profile] = []
        pauses = gc_pauses()
        probe = LagProbe(reactor)

        def handle(command: dict[str, Any]) -> dict[str, Any]:
            op = command["op"]
            metrics = acquisition.metrics
            if op == "stats":
                return {
                    "active": len(factory.active),
                    "spooled": acquisition.spool.depth if acquisition.spool is not None else 0,
                    "transactions": acquisition.writer.transactions,
                    "lookups": acquisition.directory.lookups.groups,
                    "store": store_seconds(metrics),
                    "gc": pauses,
                    "counters": {
                        f"{name}{labels if labels else ''}": int(value)
                        for name, declared in DECLARED.items()
                        if declared.kind is Counter
                        for labels, value in metrics.samples(name)
                    },
                }
            if op == "lag":  # since the last one
                return probe.take()
            if op == "profile-start":
                # CPU time, not wall: a syscall that wakes the load (a close) is not ours
                profiler.append(cProfile.Profile(time.process_time))
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
    p.add_argument("--name", default="bench-push", help="[sac] name: one a process")
    p = sub.add_parser("peer")
    p.add_argument("--backlog", type=int, default=1024)
    p = sub.add_parser("load")
    p.add_argument("--meters", type=int, required=True, help="the hot meters")
    p.add_argument("--cold", type=int, default=0, help="the cold meters after them")
    p.add_argument("--cold-parts", type=int, default=1, help="cold0, cold1...: one a measure")
    p.add_argument("--rounds", type=int, required=True, help="frames a hot meter")
    args = parser.parse_args()
    if args.command == "load":
        from push_load import load

        load(args)
        return
    {"provision": provision, "sac": sac, "peer": peer}[args.command](args)


if __name__ == "__main__":
    main()
