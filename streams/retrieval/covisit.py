"""Item-item co-visitation: "people who engaged with this also engaged with that", counted online."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from operator import itemgetter
from typing import TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)
F64 = npt.NDArray[np.float64]


class CoVisitation:
    """Decayed, symmetric co-engagement counts with at most ``max_neighbours`` kept per item.

    ``update(recent, item)`` adds ``weight`` to the pair (``item``, ``r``) for each of the user's
    last ``window`` items ``r``. Counts decay with a half-life in updates, stored against a growing
    scale factor (as :class:`~streams.retrieval.Catalog` popularity) so an update touches only its
    pairs. Each item's neighbour table may grow to ``2 * max_neighbours`` and is then cut to the
    ``max_neighbours`` heaviest: the slack lets a new neighbour build up weight before it competes
    with the established ones, and memory stays at most ``2 * max_neighbours`` entries per item.

    >>> cv = CoVisitation(max_neighbours=2)
    >>> for recent, item in [(["a"], "b"), (["a"], "b"), (["a"], "c"), (["b"], "d")]:
    ...     cv.update(recent, item)
    >>> ids, scores = cv.neighbours(["a"], 5)
    >>> ids, scores.round(2).tolist()
    (['b', 'c'], [2.0, 1.0])
    >>> cv.score(["a", "d"], ["b", "c", "z"]).round(2).tolist()
    [3.0, 1.0, 0.0]
    """

    def __init__(self, max_neighbours: int = 50, window: int = 10, half_life: float = 1_000_000.0) -> None:
        self.max_neighbours = max_neighbours
        self.window = window
        self._growth = 2.0 ** (1.0 / half_life)
        self._scale = 1.0
        self._table: dict[Hashable, dict[Hashable, float]] = {}

    def __len__(self) -> int:
        """Items with at least one neighbour."""
        return len(self._table)

    def n_neighbours(self, item: Hashable) -> int:
        """How many neighbours ``item`` holds now (at most ``2 * max_neighbours``)."""
        return len(self._table.get(item, ()))

    def update(self, user_recent_items: Sequence[K], item: K, weight: float = 1.0) -> None:
        """Count ``item`` as co-engaged with each of the user's last ``window`` items (call before
        appending ``item`` to the history; ``item`` itself and repeats in the window count once)."""
        if weight <= 0.0:
            return
        self._scale *= self._growth
        if self._scale > 1e100:  # renormalise long before float64 overflows
            for row in self._table.values():
                for key in row:
                    row[key] /= self._scale
            self._scale = 1.0
        add = weight * self._scale
        for other in dict.fromkeys(user_recent_items[-self.window :]):
            if other != item:
                self._add(item, other, add)
                self._add(other, item, add)

    def _add(self, a: Hashable, b: Hashable, add: float) -> None:
        row = self._table.setdefault(a, {})
        row[b] = row.get(b, 0.0) + add
        if len(row) > 2 * self.max_neighbours:
            kept = sorted(row.items(), key=lambda kv: -kv[1])[: self.max_neighbours]
            self._table[a] = dict(kept)

    def neighbours(self, items: Iterable[K], n: int) -> tuple[list[Hashable], F64]:
        """The ``n`` items most co-engaged with ``items`` (scores summed over them), best first;
        ``items`` themselves are left out."""
        given = set(items)
        acc: dict[Hashable, float] = {}
        for it in given:
            for other, count in self._table.get(it, {}).items():
                if other not in given:
                    acc[other] = acc.get(other, 0.0) + count
        best = heapq.nlargest(n, acc.items(), key=itemgetter(1))
        return [k for k, _ in best], np.array([v for _, v in best], np.float64) / self._scale

    def score(self, user_recent_items: Sequence[K], candidate_ids: Sequence[K]) -> F64:
        """Per candidate, its co-engagement with the user's last ``window`` items: ``[n]``."""
        pos: dict[Hashable, int] = {c: i for i, c in enumerate(candidate_ids)}
        out = [0.0] * len(candidate_ids)  # a list: scalar += on a numpy array is ~5x slower
        for it in dict.fromkeys(user_recent_items[-self.window :]):
            row = self._table.get(it)
            if row:
                for other in row.keys() & pos.keys():  # intersect in C, loop over the hits only
                    out[pos[other]] += row[other]
        return np.array(out, np.float64) / self._scale
