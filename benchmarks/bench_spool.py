"""Spool benchmark: appends/s and replay/s of the spool, against the other design.

    segments  the spool before issue 20, kept as benchmarks/spool_segments.py: a home-made
              write-ahead log of CRC'd records in segments, a two-slot cursor, one write and
              one fsync a group of appends
    sqlite    sac.services.spool: one SQLite table, WAL, synchronous=FULL, EXCLUSIVE locking,
              one transaction a group of appends

Both are measured in the same run, interleaved, best of the rounds; the figures that matter
are the ratios.  The records are what the push path spools: ``encode_record`` of the ciphered
CF47 push of benchmarks/peers.py (86 bytes), and of the same padded to 200 bytes (a longer
compact frame).  Shapes:

    append   ``flight`` appends in flight at once, each replaced as it fires, for ``seconds``:
             1 (one meter at a time: the fsync's latency), 200 (bench_push.py's meters in
             flight: the push path stores about 2,300 sessions/s with them), 1000 (a burst
             of sessions whose store_timeout ran out together, sustained: the disk's
             bandwidth)
    open     opening the spool again with all of that on it
    replay   every record of it through a handler that does nothing, oldest first, and
             closing the spool

Each shape is measured three ways: records/s (wall clock), the process's CPU time a record
(all threads: the reactor's and the pool's) and the bytes it had written to storage a record
(Linux's /proc/self/io): the last two hold still on a busy machine where the first does not.

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

SPOOLS = {"segments": "spool_segments", "sqlite": "sac.services.spool"}
FLIGHTS = [1, 200, 1000]  # 200: the meters in flight of bench_push.py
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


def written() -> int:
    """The bytes this process has had written to storage so far (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))
    except OSError:
        return 0


class Shape:
    """One measure: records, and the wall time, CPU time and bytes written they took."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.disk = time.perf_counter(), time.process_time(), written()

    def done(self, records: int) -> tuple[float, float, float]:
        """Records/s, CPU microseconds a record (all threads), bytes written a record."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return records / wall, cpu / records * 1e6, (written() - self.disk) / records


async def appends(spool: Any, batch: list[bytes], seconds: float, flight: int) -> int:
    """Appends for ``seconds``, ``flight`` of them in flight, each replaced as it fires."""
    window: deque[Deferred[None]] = deque()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        while len(window) < flight:
            window.append(spool.append(batch[n % len(batch)]))
            n += 1
        await window.popleft()
    await gatherResults(list(window))
    return n


async def measure(
    kind: ModuleType, folder: Path, size: int, seconds: float, flights: list[int]
) -> dict[str, tuple[float, float, float]]:
    batch = records(size)
    spool = kind.Spool(folder)
    await spool.open()
    figures = {}
    for flight in flights:
        shape = Shape()
        n = await appends(spool, batch, seconds, flight)
        figures[f"append, {flight:>4} in flight"] = shape.done(n)
    held = spool.depth
    await spool.close()
    shape = Shape()
    spool = kind.Spool(folder)
    await spool.open()
    figures[f"open with {held:,}"] = shape.done(held)
    assert spool.depth == held

    async def handler(record: bytes) -> None:
        pass

    shape = Shape()
    assert await spool.replay(handler) == held
    await spool.close()
    figures["replay all, close"] = shape.done(held)
    return figures


def best(samples: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The fastest rate, the least CPU and the fewest bytes of the rounds."""
    return (
        max(s[0] for s in samples),
        min(s[1] for s in samples),
        min(s[2] for s in samples),
    )


async def main(reactor: Any, args: argparse.Namespace) -> None:
    spools = {name: importlib.import_module(module) for name, module in SPOOLS.items()}
    print(
        f"spool benchmark: best of {args.rounds} interleaved rounds, {args.seconds:g} s a"
        " measure; CPU is all threads', disk the bytes written (/proc/self/io)"
    )
    for size in args.sizes:
        samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for r in range(args.rounds):
            for name, kind in spools.items():
                with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                    figures = await measure(
                        kind, Path(folder) / f"{name}{r}", size, args.seconds, args.flights
                    )
                for i, value in enumerate(figures.values()):
                    samples.setdefault((name, i), []).append(value)
        print(f"\nrecords of {size} bytes (open: the records of the first round)")
        print(
            f"  {'':25}{'segments/s':>12}{'sqlite/s':>12}{'ratio':>8}"
            f"{'CPU µs/record':>20}{'disk B/record':>18}"
        )
        for i, what in enumerate(figures):
            a, b = best(samples[("segments", i)]), best(samples[("sqlite", i)])
            print(
                f"  {what:25}{a[0]:12,.0f}{b[0]:12,.0f}{b[0] / a[0]:7.2f}x"
                f"{a[1]:10.1f} /{b[1]:7.1f}{a[2]:9,.0f} /{b[2]:7,.0f}"
            )


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
