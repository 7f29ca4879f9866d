"""The agent's garbage-collector settings: rarer young collections, start-up objects frozen."""

from __future__ import annotations

import gc

from agent._gc import YOUNG_THRESHOLD, tune_for_throughput


def test_gc_tuning_raises_the_young_threshold_and_freezes_start_up_objects():
    """After tuning, young collections wait for YOUNG_THRESHOLD allocations and what existed
    before is permanent (not walked by collections); older thresholds are kept.
    """
    before = gc.get_threshold()
    try:
        tune_for_throughput()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
