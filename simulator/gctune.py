"""The garbage collector's thresholds for the processes that run a fleet or serve it.

CPython collects its youngest generation every 700 net allocations of container objects. A
fleet process allocates a few hundred objects per request and holds many thousands of live
devices, so it collected tens of times per simulated second and every collection walked
the survivors: about a tenth of a fleet process's CPU (gc.callbacks, 10 000 devices x 24 h,
2 processes: 27 s of 282 s). Collecting the young generation every 20 000 allocations, and
the older ones half as often as CPython does, cut that to 9 s; the embedded server gained
too (docs/simulator.md, Performance). Cycles are still collected, only in larger batches.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

THRESHOLDS = (20_000, 20, 20)  # CPython's default: (700, 10, 10)


@contextlib.contextmanager
def batched_collection() -> Iterator[None]:
    """Collect with `THRESHOLDS` inside the block; the previous thresholds after it."""
    saved = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
