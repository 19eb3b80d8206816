"""Pool recall: how often the item a user engages with next was among the candidates of the list they saw.

A ranker can only order what retrieval offered, so this bounds what any ranking of the pool can
reach. At each positive event of a user with a list before it (the events the replay scores), the
engaged item is looked up in that list's candidate pool: counted for the source that contributed it
(the first source wins a duplicate, as in the pool itself), or as missed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from streams.contracts import Event
from streams.evaluate.protocol import is_positive
from streams.recommender import SOURCES, ListTrace

Candidates = tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]


class PoolRecall:
    """Counts, over a replay fed batch by batch, the positives found in the previous pool, per source.

    ``row_of`` maps an item id to its catalog row (``-1`` when the catalog does not know it).

    >>> recall = PoolRecall({"a": 0, "b": 1, "c": 2}.get)
    >>> ev = lambda i, item, v: Event(event_id=f"e{i}", user_id="u", item_id=item, type="rating", value=v, ts=i)
    >>> pool = ListTrace("p", "r", Counter(), 0.0, (np.array([1, 2]), np.array([0, 1], np.int8)))
    >>> recall.feed([ev(0, "a", 5), ev(1, "c", 5), ev(2, "a", 2)], [pool, pool, pool])
    >>> recall.summary()["total"], recall.summary()["co-visited"], recall.positives
    (1.0, 1.0, 1)
    """

    def __init__(self, row_of: Callable[[str], int | None]) -> None:
        self.row_of = row_of
        self.last: dict[str, Candidates] = {}
        self.hits: Counter[str] = Counter()
        #: Positive events of users who had a pool before them.
        self.positives = 0

    def feed(self, events: Sequence[Event], traces: Sequence[ListTrace]) -> None:
        """Take a batch's events and their lists' traces, in order (a system without traces: nothing)."""
        if len(traces) != len(events):  # the baselines trace nothing
            return
        for event, trace in zip(events, traces, strict=True):
            last = self.last.get(event.user_id)
            if last is not None and is_positive(event):
                self.positives += 1
                row = self.row_of(event.item_id)
                found = np.flatnonzero(last[0] == (-1 if row is None else row))
                if len(found):
                    self.hits[SOURCES[int(last[1][found[0]])]] += 1
            if trace.candidates is not None:
                self.last[event.user_id] = trace.candidates

    def summary(self) -> dict[str, float]:
        """The share of those positives found in the pool, per source and in ``total``."""
        n = max(self.positives, 1)
        out = {source: self.hits[source] / n for source in SOURCES}
        out["total"] = sum(self.hits.values()) / n
        return out
