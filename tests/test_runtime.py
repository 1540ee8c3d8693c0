"""The process settings a SAC applies once started."""

from __future__ import annotations

import gc

from sac.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the modules and objects loaded so far
        cycle: list[object] = []
        cycle.append(cycle)  # cyclic garbage made after start-up is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
