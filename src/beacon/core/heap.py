"""The garbage collector of a long-running process, set for throughput once it has started.

Start-up objects (modules, settings, caches, the app) live as long as the process: `gc.freeze`
keeps them out of every later collection, which then walks only the objects of the work in hand.
The work itself (requests, events, bus messages) is freed by reference counting as it ends, so
the young generation can be collected every `YOUNG_THRESHOLD` allocations rather than every 700:
under load, default collections cost ingest about 5 % of its time (measured by the `gc`
callbacks during `bench/ingest.py`), these about 0.5 %.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Allocations between two young-generation collections (Python's default: 700)."""


def settle_after_start(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Freeze what start-up allocated and make collections rarer (call once started)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold)
