"""How often each item is the one taken among the ranker's candidates: a learned item prior."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class TakeRates:
    """Per item, how many ranker lessons offered it as a candidate and how many of them it was the one
    taken; :meth:`lift` is its take rate over all items' rate, in log, shrunk towards 0 by ``shrink``
    pseudo-offers at that overall rate, so an item seldom offered reads about 0.

    Popularity counts engagements wherever they came from; this asks what the ranker needs to know:
    among the candidates a user was offered, is this one taken more often than its features say?

    >>> rates = TakeRates(shrink=1.0)
    >>> rates.learn(np.array([[0, 1], [0, 2]]), np.array([0, 0]))
    >>> rates.lift(np.array([0, 1, 2, -1])).round(2).tolist()
    [0.51, -0.69, -0.69, 0.0]
    """

    def __init__(self, shrink: float = 20.0) -> None:
        self.shrink = shrink
        self._offered = np.zeros(0, np.float64)
        self._taken = np.zeros(0, np.float64)
        self._totals = (0.0, 0.0)  # offers and takes of every item: the overall rate without a pass over them

    def _grow(self, n_rows: int) -> None:
        if n_rows > len(self._offered):
            pad = np.zeros(max(n_rows, 2 * len(self._offered)) - len(self._offered))
            self._offered, self._taken = np.concatenate([self._offered, pad]), np.concatenate([self._taken, pad])

    def lift(self, rows: Rows) -> F64:
        """``log`` of each row's shrunk take rate over the overall rate; ``-1`` rows and rows never offered read 0."""
        valid = rows >= 0
        self._grow(int(rows.max(initial=-1)) + 1)
        offered, taken = self._totals
        if not offered:
            return np.zeros(rows.shape)
        overall = taken / offered
        safe = np.where(valid, rows, 0)
        rate = (self._taken[safe] + self.shrink * overall) / (self._offered[safe] + self.shrink)
        out: F64 = np.where(valid, np.log(rate / overall), 0.0)
        return out

    def learn(self, rows: Rows, taken: npt.NDArray[np.intp]) -> None:
        """Lists of candidate ``rows`` ``[L, P]`` (``-1`` padding, or an item this catalog does not know),
        list ``l`` having had its candidate ``taken[l]`` engaged with."""
        if not rows.size:
            return
        self._grow(int(rows.max(initial=-1)) + 1)
        offered = rows[rows >= 0]
        chosen = rows[np.arange(len(rows)), taken]
        chosen = chosen[chosen >= 0]
        np.add.at(self._offered, offered, 1.0)
        np.add.at(self._taken, chosen, 1.0)
        self._totals = (self._totals[0] + len(offered), self._totals[1] + len(chosen))

    def state(self, n_rows: int) -> dict[str, npt.NDArray[np.generic]]:
        """The counts of the catalog's ``n_rows`` rows."""
        self._grow(n_rows)
        return {"offered": self._offered[:n_rows].copy(), "taken": self._taken[:n_rows].copy()}

    def load_state(self, state: Mapping[str, npt.NDArray[np.generic]], remap: Rows | None, n_rows: int) -> None:
        """Take a :meth:`state` whose row ``i`` is this catalog's row ``remap[i]`` (``None``: the same rows;
        ``-1``: an item this catalog does not have, dropped). A state without counts (a learner of a version
        before them) starts from none."""
        offered = np.asarray(state.get("offered", np.zeros(0)), np.float64)
        taken = np.asarray(state.get("taken", np.zeros(0)), np.float64)
        rows = np.arange(len(offered)) if remap is None else remap
        keep = rows >= 0
        self._offered, self._taken = np.zeros(n_rows), np.zeros(n_rows)
        self._grow(int(rows.max(initial=-1)) + 1)
        self._offered[rows[keep]], self._taken[rows[keep]] = offered[keep], taken[keep]
        self._totals = (float(self._offered.sum()), float(self._taken.sum()))
