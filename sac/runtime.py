"""Process-wide settings of a SAC process, applied once it has started.

The garbage collector: a push session lives about 0.1 s and leaves its objects to the
reference counts, but at thousands of sessions a second CPython's default thresholds (700
allocations a young collection, a full collection every 100 of them) ran full collections
that scanned every long-lived object -- the meter cache, the profiles, the modules -- and
paused the reactor for up to a quarter of a second (``benchmarks/bench_push.py`` prints the
pauses).  :func:`tune_gc` moves what exists after start-up out of the collector's sight
(``gc.freeze``) and collects less often; cyclic garbage is still collected, later.

At a stop, :func:`wait_at_most` gives work in flight (sessions, polls) a bounded time.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeout

__all__ = ["GC_THRESHOLDS", "tune_gc", "wait_at_most"]

# young collections every 10,000 allocations net; the middle one every 4 of them (every 20,
# it scanned what 20 young ones had left -- a push session's objects, the 30-second cache's
# meters -- in pauses of up to 200 ms; every 4: 15-20 ms, the same work in all, cold p99
# 226 ms against 262 in benchmarks/bench_push.py); a full one every 50 middle ones (and, in
# CPython, only when it would scan 25 % more than last)
GC_THRESHOLDS = (10_000, 4, 50)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze the objects made so far and set the collection thresholds: call it once the
    process has loaded its profiles and opened its store."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def wait_at_most(deferreds: Iterable[Deferred[Any]], seconds: float, reactor: Any) -> None:
    """Wait until every one of ``deferreds`` has fired (their failures ignored) or
    ``seconds`` have passed, whichever comes first; those still waiting then are cancelled."""
    waiting = [d for d in deferreds if not d.called]
    if not waiting:
        return
    every = DeferredList(waiting, consumeErrors=True)
    every.addTimeout(seconds, reactor)
    with contextlib.suppress(CancelledError, DeferredTimeout):
        await every
