"""Read-plan benchmark: what a pushed meter's session costs when its read plan is due, against
the same meter's push with nothing due (the peer, measured in the same run).

    plan     the first push of each of N simulated meters (sac.simulator: real DLMS answers
             over loopback TCP, the generic UNI/TS profile, a few simulated days of life in
             their logbooks and daily profile): its read plan is due, so the SAC opens the
             Management association after storing the push and reads the battery, the current
             diagnostic, the three logbooks since their last entry, the clock and the daily
             profile, then closes
    push     the second push of each meter, the same day: nothing due, the push alone
             (stored, then the clean close)

For each: bytes on the wire both ways (counted at the SAC's end of each socket), requests,
and the time from the meter's connect to the SAC's close (p50, p99).  The meters push one
after the other (a session's time is its own, not a queue's).  The store is SQLite in a
temporary folder (the session's cost is on the wire and in the meter; the store's is
bench_push's).  Run: ``.venv/bin/python benchmarks/bench_plan.py [--meters N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import react
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from sac.keys import MasterKey
from sac.profiles import discover_profiles
from sac.services.acquisition import Acquisition
from sac.services.push import PushFactory
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet
from sac.simulator.session import MeterProtocol
from sac.store import NewMeter
from sac.store.keycsv import parse_key_csv
from sac.store.sqlite import SQLiteStore

MASTER = MasterKey.from_text("33" * 32)
PROFILE = "uni-ts-11291-12-2"


class Counted(ProtocolWrapper):
    """A SAC connection whose bytes are counted both ways, reported at its end."""

    received = sent = writes = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.sent += len(data)
        self.writes += 1
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.sent += sum(len(d) for d in data)
        self.writes += 1
        super().writeSequence(data)

    def connectionLost(self, reason: Any) -> None:
        self.factory.ended.append((self.received, self.sent, self.writes))
        super().connectionLost(reason)


class Counting(WrappingFactory):
    protocol = Counted

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.ended: list[tuple[int, int, int]] = []


async def push(reactor: Any, port: int, meter: Any) -> float:
    """One push session of ``meter``: seconds from its connect to the SAC's close."""
    protocol = MeterProtocol(meter, push_template=meter.profile.push_templates[0], reactor=reactor)
    ended: Deferred[None] = Deferred()
    lost = protocol.connectionLost

    def on_lost(reason: Any = None) -> None:
        lost(reason)
        ended.callback(None)

    protocol.connectionLost = on_lost  # type: ignore[method-assign]
    began = time.perf_counter()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    await ended
    return time.perf_counter() - began


async def provisioned(reactor: Any, folder: Path, fleet: Fleet) -> SQLiteStore:
    store = SQLiteStore(folder / "sac.db", MASTER, reactor=reactor)
    await store.open()
    for m in fleet.meters:
        await store.meters.add(
            NewMeter(m.ldn, pdr=m.pdr, system_title=m.system_title, profile=PROFILE)
        )
    rows, errors = parse_key_csv(fleet.keys_csv())
    assert not errors, errors
    await store.keys.import_rows(rows)
    return store


def phase(name: str, times: list[float], counted: list[tuple[int, int, int]]) -> dict:
    n = len(times)
    received = sum(r for r, _, _ in counted) / n
    sent = sum(s for _, s, _ in counted) / n
    requests = sum(w for _, _, w in counted)
    ordered = sorted(times)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(n - 1, int(n * 0.99))] * 1000
    print(
        f"  {name:<6} {received:8,.0f} B in {sent:8,.0f} B out {requests / n:6.1f} frames sent"
        f"   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({n} sessions)"
    )
    return {"bytes": received + sent, "p50": p50, "requests": requests / n}


async def run(reactor: Any, meters: int, days: int) -> None:
    registry = discover_profiles().registry
    fleet = Fleet(meters, registry[PROFILE], clock=reactor.seconds, reactor=reactor)
    for m in fleet.meters:  # some days of life: daily profile entries, logbook events
        m.last_update -= days * 86400
        m.last_day -= days
        m.advance()
    with tempfile.TemporaryDirectory() as folder:
        store = await provisioned(reactor, Path(folder), fleet)
        acquisition = Acquisition(store, registry, reactor=reactor)
        sessions = PushFactory(
            acquisition, store, reactor=reactor, session=SessionSettings(name="bench-plan")
        )
        counting = Counting(sessions)
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(counting)
        port = listening.getHost().port
        print(
            f"read-plan benchmark: {meters} meters of {PROFILE}, {days} simulated days each,"
            f" one session at a time, SQLite"
        )
        results = {}
        for name in ("plan", "push"):
            counting.ended.clear()
            times = [await push(reactor, port, m) for m in fleet.meters]
            while len(counting.ended) < meters:  # the SAC's ends of the last sockets
                d: Deferred[None] = Deferred()
                reactor.callLater(0.01, d.callback, None)
                await d
            results[name] = phase(name, times, list(counting.ended))
        plan, alone = results["plan"], results["push"]
        print(
            f"  ratio  plan/push: {plan['bytes'] / alone['bytes']:.1f}x the bytes,"
            f" {plan['p50'] / alone['p50']:.1f}x the time (p50)"
        )
        await listening.stopListening()
        await fleet.stop()
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=5, help="simulated days of life before")
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args.meters, args.days)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
