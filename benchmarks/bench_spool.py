"""Spool benchmark: appends/s and replay/s of the spool, against the other design.

    segments  the home-made write-ahead log: segments of CRC'd records, a two-slot cursor,
              one write and one fsync a group of appends
    sqlite    one SQLite table, WAL, synchronous=FULL, EXCLUSIVE locking, one transaction a
              group of appends

Both are measured in the same run, interleaved, best of the rounds; the figures that matter
are the ratios.  The records are what the push path spools: ``encode_record`` of the ciphered
CF47 push of benchmarks/peers.py (86 bytes), and of the same padded to 200 bytes (a longer
compact frame).  Shapes:

    append   ``flight`` appends in flight at once (a burst of pushes while the store is
             away: each session waits for its own append), for ``seconds``
    open     closing the spool and opening it again with all of that on it
    replay   every record of it through a handler that does nothing, oldest first

Run: ``.venv/bin/python benchmarks/bench_spool.py [--seconds S] [--rounds N]``; the spools
live in a temporary folder (``--dir`` for another disk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import peers
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import react

from sac.services.acquisition import encode_record

SPOOLS = {"segments": "sac.services.spool", "sqlite": "sac.services.spool_sqlite"}
FLIGHTS = [1, 64, 1000]
SIZES = [86, 200]


def records(size: int, count: int = 1024) -> list[bytes]:
    """``count`` distinct spool records of ``size`` bytes: the CF47 push as received."""
    apdu = peers.PUSH_FRAME[8:]
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    out = []
    for i in range(count):
        record = encode_record(apdu, f"10.{i // 256 % 256}.{i % 256}.1", t0 + dt.timedelta(i))
        out.append(record.ljust(size, b"\x5a"))
    assert {len(r) for r in out} == {size}, "a record is longer than the size asked for"
    return out


async def appends(spool: Any, batch: list[bytes], seconds: float, flight: int) -> float:
    """Appends/s with ``flight`` of them in flight, each replaced as it fires."""
    window: deque[Deferred[None]] = deque()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        while len(window) < flight:
            window.append(spool.append(batch[n % len(batch)]))
            n += 1
        await window.popleft()
    await gatherResults(list(window))
    return n / (time.perf_counter() - start)


async def measure(
    kind: ModuleType, folder: Path, size: int, seconds: float, flights: list[int]
) -> dict[str, float]:
    batch = records(size)
    spool = kind.Spool(folder)
    await spool.open()
    figures = {}
    for flight in flights:
        figures[f"append, {flight:>4} in flight"] = await appends(spool, batch, seconds, flight)
    held = spool.depth
    await spool.close()
    start = time.perf_counter()
    spool = kind.Spool(folder)
    await spool.open()
    figures["open (records/s)"] = held / (time.perf_counter() - start)
    assert spool.depth == held

    async def handler(record: bytes) -> None:
        pass

    start = time.perf_counter()
    assert await spool.replay(handler) == held
    figures["replay"] = held / (time.perf_counter() - start)
    figures["records"] = held
    await spool.close()
    return figures


async def main(reactor: Any, args: argparse.Namespace) -> None:
    seconds, rounds, where = args.seconds, args.rounds, args.dir
    spools = {name: importlib.import_module(module) for name, module in SPOOLS.items()}
    print(
        f"spool benchmark: records/s, best of {rounds} interleaved rounds, {seconds:g} s a measure"
    )
    for size in args.sizes:
        best: dict[str, dict[str, float]] = {name: {} for name in spools}
        for r in range(rounds):
            for name, kind in spools.items():
                with tempfile.TemporaryDirectory(dir=where) as folder:
                    figures = await measure(
                        kind, Path(folder) / f"{name}{r}", size, seconds, args.flights
                    )
                for what, value in figures.items():
                    best[name][what] = max(best[name].get(what, 0.0), value)
        print(f"\nrecords of {size} bytes")
        print(f"  {'':22}{'segments':>12}{'sqlite':>12}{'sqlite/segments':>18}")
        for what in best["segments"]:
            a, b = best["segments"][what], best["sqlite"][what]
            print(f"  {what:22}{a:12,.0f}{b:12,.0f}{b / a:17.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the spools are made")
    parser.add_argument("--flights", type=int, nargs="+", default=FLIGHTS)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    args = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, args)))
    sys.exit(0)
