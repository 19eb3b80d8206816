"""Each user's last candidate pool: the lists the listwise ranker learns from."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.int64]
Sources = npt.NDArray[np.int8]


class LastPools:
    """The candidates of the last list made for each of the ``capacity`` users seen most recently: their
    catalog rows and sources, the ``width`` most relevant of them in pool order.

    Memory is about ``capacity * width * 9`` bytes (100,000 users x 100 candidates: 90 MB). A user
    pushed out, or a restarted worker, simply has no lesson at their next engagement.

    >>> pools = LastPools(capacity=2, width=2)
    >>> pools.put("a", np.array([5, 6, 7]), np.array([0, 1, 1], np.int8), np.array([0.1, 0.9, 0.5]))
    >>> rows, sources = pools.get("a"); rows.tolist(), sources.tolist()
    ([6, 7], [1, 1])
    >>> pools.put("b", np.array([1]), np.array([0], np.int8), np.array([1.0]))
    >>> pools.put("c", np.array([2]), np.array([0], np.int8), np.array([1.0]))
    >>> pools.get("a") is None, len(pools)
    (True, 2)
    """

    def __init__(self, capacity: int = 100_000, width: int = 100) -> None:
        self.capacity = capacity
        self.width = width
        self._pools: OrderedDict[str, tuple[Rows, Sources]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pools)

    def put(self, user: str, rows: Rows, sources: Sources, relevance: npt.NDArray[np.floating]) -> None:
        if len(rows) > self.width:
            keep = np.sort(np.argsort(-relevance, kind="stable")[: self.width])
            rows, sources = rows[keep], sources[keep]
        self._pools[user] = (rows.astype(np.int64), sources.astype(np.int8))
        self._pools.move_to_end(user)
        while len(self._pools) > self.capacity:
            self._pools.popitem(last=False)

    def get(self, user: str) -> tuple[Rows, Sources] | None:
        return self._pools.get(user)
