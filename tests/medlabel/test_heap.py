"""medlabel.heap: a long-lived process freezes its start-up heap, so full collections do not scan it."""

from __future__ import annotations

import gc

from medlabel.heap import freeze_startup_heap


def test_freezing_moves_the_live_objects_out_of_the_collectors_reach() -> None:
    before = sum(gc.get_count())
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000  # the imports at least
        assert sum(gc.get_count()) <= before  # nothing left pending in the young generations
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
