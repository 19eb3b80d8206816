"""Python's garbage collector as the worker runs it (``Settings.gc_thresholds``), for a block of a
process that is not a worker: ``bench core`` and ``bench pipeline``, and the demo's load generator
(the worker and ``streamrec evaluate`` set it for their whole process)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_thresholds(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """Python's garbage collector thresholds set to ``thresholds`` for the block.

    A process that offers load and collects every list it gets back holds a heap that grows with each
    list; with Python's default thresholds a full collection of it runs every few seconds and pauses
    the producer for 0.2-0.4 s, which the worker then sees as a burst.

    >>> import gc
    >>> before = gc.get_threshold()
    >>> with gc_thresholds((50000, 50, 100)):
    ...     gc.get_threshold()
    (50000, 50, 100)
    >>> gc.get_threshold() == before
    True
    """
    before = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)
