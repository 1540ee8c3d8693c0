"""Process-wide settings of a SAC process, applied once it has started.

The garbage collector: a push session lives about 0.1 s and leaves its objects to the
reference counts, but at thousands of sessions a second CPython's default thresholds (700
allocations a young collection, a full collection every 100 of them) ran full collections
that scanned every long-lived object -- the meter cache, the profiles, the modules -- and
paused the reactor for up to a quarter of a second (``benchmarks/bench_push.py`` prints the
pauses).  :func:`tune_gc` moves what exists after start-up out of the collector's sight
(``gc.freeze``) and collects less often; cyclic garbage is still collected, later.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

# young collections every 10,000 allocations net; the middle one every 20 of them; a full
# one every 50 middle ones (and, in CPython, only when it would scan 25 % more than last)
GC_THRESHOLDS = (10_000, 20, 50)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze the objects made so far and set the collection thresholds: call it once the
    process has loaded its profiles and opened its store."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
