"""Each user's last candidate pool: the lists the listwise ranker learns from."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

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
        self.store(user, *self.cut([(rows, sources, relevance)])[0])

    def cut(
        self, pools: Sequence[tuple[Rows, Sources, npt.NDArray[np.floating]]]
    ) -> list[tuple[Rows, Sources]]:
        """Each pool's ``width`` most relevant candidates in pool order (ties: the earlier), sorted
        for all the pools at once."""
        out = [(rows, sources) for rows, sources, _ in pools]
        long = [i for i, (rows, _, _) in enumerate(pools) if len(rows) > self.width]
        if long:
            relevance = np.full((len(long), max(len(pools[i][0]) for i in long)), -np.inf)
            for line, i in enumerate(long):
                relevance[line, : len(pools[i][2])] = pools[i][2]
            keep = top_in_order(relevance, self.width)
            for line, i in enumerate(long):
                out[i] = (pools[i][0][keep[line]], pools[i][1][keep[line]])
        return out

    def store(self, user: str, rows: Rows, sources: Sources) -> None:
        """Keep ``rows`` and ``sources`` (already :meth:`cut`) as the user's last pool."""
        # Copies: a pool is often a slice of its whole batch's arrays, which it must not keep alive.
        self._pools[user] = (rows.astype(np.int64), sources.astype(np.int8))
        self._pools.move_to_end(user)
        while len(self._pools) > self.capacity:
            self._pools.popitem(last=False)

    def get(self, user: str) -> tuple[Rows, Sources] | None:
        return self._pools.get(user)


def top_in_order(values: npt.NDArray[np.floating], n: int) -> npt.NDArray[np.intp]:
    """Per row of ``values`` ``[B, m]`` (``n < m``), the positions of its ``n`` largest, ties to the earlier,
    in position order: ``np.sort(np.argsort(-values, kind="stable")[:, :n])`` without sorting whole rows
    (a partition finds each row's ``n``-th value; only the ties at it need their positions counted).

    >>> top_in_order(np.array([[0.5, 0.9, 0.5, 0.1, 0.5]]), 3).tolist()
    [[0, 1, 2]]
    """
    cut = -np.partition(-values, n - 1, axis=1)[:, n - 1 : n]
    above = values > cut
    tied = values == cut
    # Of the ties at the cut, the earliest fill what the values above leave of n.
    keep = above | (tied & (np.cumsum(tied, axis=1) <= n - above.sum(axis=1, keepdims=True)))
    out: npt.NDArray[np.intp] = np.nonzero(keep)[1].reshape(len(values), n)
    return out
