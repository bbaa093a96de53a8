"""The long-lived process's heap and the garbage collector.

A portal or API process serves many sessions from threads of one interpreter. Python's full (generation
2) collection scans every tracked object and stops every thread while it runs; with the imports, the
application context and its caches alive, they took 31-349 ms in the queue benchmark with 20 readers,
and each one held up every reader's claim in flight (docs/benchmarks.md, "Reader queue"). Objects made at
start-up live as long as the process, so they are moved out of the collector's reach once the process has
started (``gc.freeze``, as Python's documentation suggests for long-lived processes); collections then
scan only what requests create.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object alive now (imports, the app's context, caches). Returns the
    number of objects frozen so far. Safe to call again (later objects are frozen too)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
