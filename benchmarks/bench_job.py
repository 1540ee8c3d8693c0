"""Jobs benchmark: one command for many meters, against its peer, the same command queued one
by one (:func:`sac.services.commands.queue`, as the valve page and RequestValve do), measured
in the same run on SQLite.

    e2e    1,000 simulated meters (sac.simulator, in this process) push to a SAC (its push
           listener and acquisition, in this process, on 127.0.0.1), ``--concurrency``
           sessions at once, each session running the meter's sync-clock: from the job's
           start to all its commands done, meters/s.  Peer: the same 1,000 commands queued
           one by one, then the same pushes.  The simulated meters' ciphering runs on the
           same core as the SAC's: both figures share that cost, the ratio stands
    queue  a job over 100,000 meters (inserted in bulk): from its start to its commands all
           queued (expansion only), meters/s, and the reactor's longest stall meanwhile (the
           largest gap of a 10 ms LoopingCall: what another request would wait).  Peer: the
           same command queued one by one for ``--peer`` meters, commands/s

Run: ``.venv/bin/python benchmarks/bench_job.py [--meters N] [--big N] [--peer N]
[--concurrency C]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import LoopingCall, react

from sac.keys import MasterKey
from sac.profiles import discover_profiles
from sac.protocols.push import ListenerSettings
from sac.services import commands as command_service
from sac.services.acquisition import Acquisition
from sac.services.jobs import JobRequest, Jobs
from sac.services.push import PushFactory
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet
from sac.simulator.session import MeterProtocol
from sac.store import Actor, CommandState, MeterQuery, NewMeter
from sac.store.keycsv import parse_key_csv
from sac.store.sqlite import SQLiteStore

MASTER = MasterKey.from_text("33" * 32)
REGISTRY = discover_profiles().registry
PROFILE = "uni-ts-11291-12-2"
BY = Actor("bench", "127.0.0.1")


async def fleet_store(reactor: Any, folder: Path, count: int) -> tuple[SQLiteStore, Fleet]:
    store = SQLiteStore(folder / f"e2e-{time.monotonic_ns()}.db", MASTER, reactor=reactor)
    await store.open()
    fleet = Fleet(count, REGISTRY[PROFILE], clock=reactor.seconds, reactor=reactor, seed=5)
    meters = [
        (NewMeter(m.ldn, pdr=m.pdr, system_title=m.system_title, profile=PROFILE), {})
        for m in fleet.meters
    ]
    for i in range(0, len(meters), 1000):
        await store.meters.add_many(meters[i : i + 1000])
    rows, errors = parse_key_csv(fleet.keys_csv())
    assert not errors
    await store.keys.import_rows(rows)
    return store, fleet


async def push(reactor: Any, port: int, meter: Any) -> None:
    protocol = MeterProtocol(meter, push_template=meter.profile.push_templates[0], reactor=reactor)
    ended: Deferred[None] = Deferred()
    lost = protocol.connectionLost

    def on_lost(reason: Any = None) -> None:
        lost(reason)
        ended.callback(None)

    protocol.connectionLost = on_lost  # type: ignore[method-assign]
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    await ended


async def pushes(reactor: Any, port: int, fleet: Fleet, concurrency: int) -> None:
    gate = DeferredSemaphore(concurrency)
    await gatherResults(
        [gate.run(lambda m=m: Deferred.fromCoroutine(push(reactor, port, m))) for m in fleet.meters]
    )


async def e2e(reactor: Any, folder: Path, count: int, concurrency: int, job: bool) -> float:
    """Meters/s from the start (a job, or one by one) to all done."""
    store, fleet = await fleet_store(reactor, folder, count)
    acquisition = Acquisition(store, REGISTRY, reactor=reactor)
    factory = PushFactory(
        acquisition,
        store,
        reactor=reactor,
        settings=ListenerSettings(response_timeout=10.0),
        session=SessionSettings(name="bench", read_plan=False),
    )
    listener = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    expires = store.now() + dt.timedelta(hours=2)
    began = time.perf_counter()
    if job:
        jobs = Jobs(store, REGISTRY, now=store.now, reactor=reactor)
        started = await jobs.start(JobRequest("sync-clock", {}, expires, query=MeterQuery()), BY)
        await jobs.wait(started.id)
    else:
        profile = REGISTRY[PROFILE]
        for m in fleet.meters:
            await command_service.queue(
                store, profile, m.ldn, "sync-clock", {}, BY, now=store.now(), expires=expires
            )
    await pushes(reactor, listener.getHost().port, fleet, concurrency)
    elapsed = time.perf_counter() - began
    done = await store.commands.recent(states=[CommandState.DONE], limit=count + 1)
    assert len(done) == count, f"{len(done)} of {count} done"
    if job:
        progress = await store.jobs.progress(started.id)
        assert progress.count(CommandState.DONE) == count and progress.job.state.value == "finished"
    await listener.stopListening()
    await store.close()
    return count / elapsed


def bulk(path: Path, count: int) -> None:
    conn = sqlite3.connect(path)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat()
    with conn:
        conn.executemany(
            "INSERT INTO meters (ldn, pdr, profile, created, updated) VALUES (?, ?, ?, ?, ?)",
            ((f"BIG{i:013d}", f"{i:014d}", PROFILE, now, now) for i in range(count)),
        )
    conn.close()


async def queue_rates(
    reactor: Any, folder: Path, big: int, peer: int
) -> tuple[float, float, float]:
    """(job meters/s, the reactor's longest stall in ms, one-by-one commands/s)."""
    path = folder / "big.db"
    store = SQLiteStore(path, MASTER, reactor=reactor)
    await store.open()
    bulk(path, big)
    expires = store.now() + dt.timedelta(hours=2)
    ticks: list[float] = []
    beat = LoopingCall(lambda: ticks.append(time.perf_counter()))
    beat.clock = reactor
    beat.start(0.01)
    jobs = Jobs(store, REGISTRY, now=store.now, reactor=reactor)
    began = time.perf_counter()
    job = await jobs.start(JobRequest("sync-clock", {}, expires, query=MeterQuery()), BY)
    await jobs.wait(job.id)
    rate = big / (time.perf_counter() - began)
    beat.stop()
    stall = max(b - a for a, b in itertools.pairwise(ticks)) * 1000
    assert (await store.jobs.get(job.id)).queued == big
    profile = REGISTRY[PROFILE]
    began = time.perf_counter()
    for i in range(peer):
        await command_service.queue(
            store, profile, f"BIG{i:013d}", "valve-close", {}, BY, now=store.now(), expires=expires
        )
    one_by_one = peer / (time.perf_counter() - began)
    await store.close()
    return rate, stall, one_by_one


async def main(reactor: Any, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        print(f"e2e: {args.meters:,} simulated meters pushing, {args.concurrency} at once (SQLite)")
        peer = await e2e(reactor, folder, args.meters, args.concurrency, job=False)
        ours = await e2e(reactor, folder, args.meters, args.concurrency, job=True)
        print(f"  one by one, then pushes   {peer:8.1f} meters/s")
        print(f"  a job, then pushes        {ours:8.1f} meters/s   ratio {ours / peer:.2f}")
        print(f"queue: a job over {args.big:,} meters, expansion only (SQLite)")
        rate, stall, one_by_one = await queue_rates(reactor, folder, args.big, args.peer)
        print(f"  one by one ({args.peer:,})       {one_by_one:8.0f} commands/s")
        print(f"  a job                     {rate:8.0f} meters/s   ratio {rate / one_by_one:.1f}")
        print(f"  reactor's longest stall   {stall:8.1f} ms while the job queued")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--peer", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, args)))
    sys.exit(0)
