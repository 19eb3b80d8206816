"""Item-item co-visitation: "people who engaged with this also engaged with that", counted online."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from streams.retrieval.ragged import first_occurrences, flatten

Rows = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
G = TypeVar("G", bound=np.generic)


class CoVisitation:
    """Decayed, symmetric co-engagement counts over catalog rows, at most ``max_neighbours`` kept per item.

    Each item's neighbours live in a fixed row of two arrays (neighbour rows ``int32`` and counts
    ``float64``, ``2 * max_neighbours`` slots), so a lookup is a gather and a whole micro-batch is
    scored with one ``bincount``. ``update_many`` adds ``weight`` to the pair (``item``, ``r``) for each
    of the user's last ``window`` items ``r``. Counts decay with a half-life in updates, stored
    against a growing scale factor (as :class:`~streams.retrieval.Catalog` popularity) so an update
    touches only its pairs. A row may fill all its slots and is then cut to the ``max_neighbours``
    heaviest: the slack lets a new neighbour build up weight before it competes with the
    established ones. Within one :meth:`update_many` the pairs are added together before a full
    row is cut (the per-pair order of a one-event-at-a-time update is not kept).

    ``recency`` weighs a user's recent items when they are scored against (not when counted): the
    last item weighs 1, the one before ``recency``, then ``recency ** 2`` and so on. ``1.0`` is plain
    item-kNN; what a user did last says most about what they do next (0.8 measured +6.5 % NDCG@10
    over 1.0 on the full MovieLens replay, co-visitation alone; docs/evaluation.md).

    >>> cv = CoVisitation(max_neighbours=2)
    >>> for recent, item in [([0], 1), ([0], 1), ([0], 2), ([1], 3)]:
    ...     cv.update(np.array(recent), item)
    >>> rows, scores = cv.neighbours(np.array([0]), 5)
    >>> rows.tolist(), scores.round(2).tolist()
    ([1, 2], [2.0, 1.0])
    >>> cv.score(np.array([0, 3]), np.array([1, 2, 7])).round(2).tolist()
    [3.0, 1.0, 0.0]
    """

    def __init__(
        self, max_neighbours: int = 50, window: int = 10, half_life: float = 1_000_000.0, recency: float = 1.0
    ) -> None:
        if not 0.0 < recency <= 1.0:
            raise ValueError(f"recency must be in (0, 1], got {recency}")
        self.max_neighbours = max_neighbours
        self.window = window
        self.recency = recency
        self._growth = 2.0 ** (1.0 / half_life)
        self._scale = 1.0
        self._slots = 2 * max_neighbours
        self._nbr = np.full((0, self._slots), -1, np.int32)
        self._w = np.zeros((0, self._slots), np.float64)
        self._fill = np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Items with at least one neighbour."""
        return int(np.count_nonzero(self._fill))

    def n_neighbours(self, row: int) -> int:
        """How many neighbours ``row`` holds now (at most ``2 * max_neighbours``)."""
        return int(self._fill[row]) if row < len(self._fill) else 0

    def _grow(self, rows: int) -> None:
        if rows <= len(self._fill):
            return
        cap = max(rows, 2 * len(self._fill), 64)
        extra = cap - len(self._fill)
        self._nbr = np.vstack([self._nbr, np.full((extra, self._slots), -1, np.int32)])
        self._w = np.vstack([self._w, np.zeros((extra, self._slots))])
        self._fill = np.concatenate([self._fill, np.zeros(extra, np.int64)])

    def update(self, recent: Rows, item: int, weight: float = 1.0) -> None:
        """:meth:`update_many` for one event."""
        self.update_many([recent], np.array([item]), np.array([weight]))

    def update_many(self, recent: Sequence[Rows], items: Rows, weights: npt.ArrayLike) -> None:
        """Count each ``items[i]`` as co-engaged with each of ``recent[i][-window:]`` (the user's rows
        before the event; ``items[i]`` itself and repeats count once), in order: event ``i``'s
        counts are scaled as if it were the ``i``-th update."""
        w = np.asarray(weights, np.float64)
        positive = w > 0
        if not positive.any():
            return
        # The scale each positive event adds at: the decay clock advances once per positive event.
        steps = np.cumsum(positive)
        if self._scale * self._growth ** float(steps[-1]) > 1e100:  # renormalise long before overflow
            self._w /= self._scale
            self._scale = 1.0
        adds = w * self._scale * self._growth ** steps.astype(np.float64)
        self._scale *= self._growth ** float(steps[-1])
        a, b, add = self._pairs_of(recent, items, adds, positive)
        if len(a) == 0:
            return
        self._grow(int(max(a.max(), b.max())) + 1)
        width = len(self._fill)
        pair, first, inverse = np.unique(a * width + b, return_index=True, return_inverse=True)
        pa, pb = pair // width, pair % width
        present = (self._nbr[pa] == pb[:, None]).any(axis=1)
        # Rows that fill up in this batch are cut in the middle of it: only replaying their pairs in
        # order gives what one-by-one updates give. Every other row just sums its pairs.
        full = np.flatnonzero(self._fill + np.bincount(pa[~present], minlength=width) > self._slots)
        in_order = np.isin(a, full)
        for row in full.tolist():
            mine = np.flatnonzero(a == row)
            self._replay(row, b[mine].tolist(), add[mine].tolist())
        quick = ~np.isin(pa, full)
        total = np.bincount(inverse.ravel(), weights=np.where(in_order, 0.0, add), minlength=len(pair))
        pa, pb, first, present, total = pa[quick], pb[quick], first[quick], present[quick], total[quick]
        hit = self._nbr[pa] == pb[:, None]  # [pairs, slots]
        slot = hit.argmax(axis=1)
        self._w[pa[present], slot[present]] += total[present]
        # New neighbours go in after a row's last slot, in the order they were first met.
        order = np.lexsort((first[~present], pa[~present]))
        na, nb, nw = pa[~present][order], pb[~present][order], total[~present][order]
        pos = self._fill[na] + (np.arange(len(na)) - np.searchsorted(na, na))
        self._nbr[na, pos] = nb
        self._w[na, pos] = nw
        np.add.at(self._fill, na, 1)

    def _pairs_of(
        self, recent: Sequence[Rows], items: Rows, adds: F64, positive: npt.NDArray[np.bool_]
    ) -> tuple[Rows, Rows, F64]:
        """The ``(a, b, add)`` pairs the positive events count, in the order one-by-one updates add them:
        per event, per distinct recent row other than the item (first occurrence first), the item's
        side then the other's."""
        events = np.flatnonzero(positive)
        owner, others = flatten([recent[i][-self.window :] for i in events.tolist()])
        if not len(others):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        event = events[owner]
        item = np.asarray(items, np.int64)[event]
        width = int(max(others.max(), item.max())) + 1
        keep = first_occurrences(event * width + others) & (others != item)  # each (event, row) once
        item, others, add = item[keep], others[keep], adds[event[keep]]
        return (
            np.stack([item, others], axis=1).ravel(),
            np.stack([others, item], axis=1).ravel(),
            np.repeat(add, 2),
        )

    def _replay(self, row: int, others: list[int], adds: list[float]) -> None:
        """One-by-one updates of ``row``: add each count; past the last slot, keep the heaviest
        ``max_neighbours`` (ties: the earlier neighbour)."""
        fill = int(self._fill[row])
        counts = dict(zip(self._nbr[row, :fill].tolist(), self._w[row, :fill].tolist(), strict=True))
        for other, add in zip(others, adds, strict=True):
            counts[other] = counts.get(other, 0.0) + add
            if len(counts) > self._slots:
                counts = dict(sorted(counts.items(), key=lambda kv: -kv[1])[: self.max_neighbours])
        self._nbr[row] = -1
        self._w[row] = 0.0
        self._nbr[row, : len(counts)] = list(counts)
        self._w[row, : len(counts)] = list(counts.values())
        self._fill[row] = len(counts)

    def state(self, n_rows: int) -> dict[str, npt.NDArray[np.generic]]:
        """The counts of rows ``0 .. n_rows - 1`` as arrays (undecayed: the scale is folded in), ragged:
        each row's ``fill`` neighbours one after another, so the size follows the pairs counted."""
        fill = np.pad(self._fill[:n_rows], (0, max(0, n_rows - len(self._fill))))
        used = np.arange(self._slots) < fill[: len(self._fill), None]
        return {"nbr": self._nbr[:n_rows][used], "w": self._w[:n_rows][used] / self._scale, "fill": fill}

    def load_state(self, state: Mapping[str, npt.NDArray[np.generic]], remap: Rows | None, n_rows: int) -> None:
        """Take the counts of :meth:`state`; ``remap[r]`` is this catalog's row of the state's row ``r``
        (``-1``: unknown here, its counts dropped), ``None`` when the rows are the same."""
        fill = np.asarray(state["fill"], np.int64)
        used = np.arange(self._slots) < fill[:, None]
        nbr = np.full((len(fill), self._slots), -1, np.int32)
        w = np.zeros((len(fill), self._slots), np.float64)
        nbr[used], w[used] = state["nbr"], state["w"]
        target = np.arange(len(fill))
        if remap is not None:
            nbr = np.where(nbr >= 0, remap[np.maximum(nbr, 0)], -1).astype(np.int32)
            order = np.argsort(nbr < 0, axis=1, kind="stable")  # each row's known neighbours packed left
            nbr = np.take_along_axis(nbr, order, axis=1)
            w = np.where(nbr >= 0, np.take_along_axis(w, order, axis=1), 0.0)
            fill, known = (nbr >= 0).sum(axis=1), remap >= 0
            nbr, w, fill, target = nbr[known], w[known], fill[known], remap[known]
        self._scale = 1.0
        self._nbr = np.full((0, self._slots), -1, np.int32)
        self._w = np.zeros((0, self._slots), np.float64)
        self._fill = np.zeros(0, np.int64)
        self._grow(max(n_rows, int(target.max()) + 1 if len(target) else 0))
        self._nbr[target], self._w[target], self._fill[target] = nbr, w, fill

    def accumulate(self, recent: Sequence[Rows], n_rows: int) -> CoScores:
        """Per event, every row's co-engagement with that event's last ``window`` items (each counted
        once, at its latest position, weighed by ``recency``), for the whole batch at once: one gather
        and one sum (see :class:`CoScores`)."""
        event, mine, age = self._latest(recent)
        if not len(mine):
            return CoScores(len(recent), n_rows, np.zeros(0, np.int64), np.zeros(0))
        nbr = self._nbr[mine].ravel()
        w = (self._w[mine] if self.recency == 1.0 else self._w[mine] * (self.recency**age)[:, None]).ravel()
        live = (nbr >= 0) & (nbr < n_rows)
        if not live.any():  # rows without a neighbour yet: the sorted branch below needs one pair
            return CoScores(len(recent), n_rows, np.zeros(0, np.int64), np.zeros(0))
        keys = np.repeat(event, self._slots)[live] * n_rows + nbr[live]
        w = w[live] / self._scale
        if len(recent) * n_rows <= _DENSE_MAX:  # small catalogs: one bincount over a dense [B, n] block
            acc: F64 = np.asarray(np.bincount(keys, weights=w, minlength=len(recent) * n_rows), np.float64)
            return CoScores.dense(acc.reshape(len(recent), n_rows))
        order = np.argsort(keys, kind="stable")  # large catalogs: sort the (event, row) pairs instead
        keys, w = keys[order], w[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return CoScores(len(recent), n_rows, keys[starts], np.add.reduceat(w, starts))

    def _latest(self, recent: Sequence[Rows]) -> tuple[Rows, Rows, Rows]:
        """The ``(event, row, age)`` of each distinct row among each event's last ``window`` items that has
        neighbour slots, at its latest position (age 0: the event's last item), by event then row (the
        order the scores are summed in)."""
        event, rows = flatten([r[-self.window :] for r in recent])
        age = np.cumsum(np.bincount(event, minlength=len(recent)))[event] - 1 - np.arange(len(rows))
        order = np.lexsort((age, rows, event))
        event, rows, age = event[order], rows[order], age[order]
        first = np.ones(len(rows), bool)  # the youngest of each (event, row)
        first[1:] = (event[1:] != event[:-1]) | (rows[1:] != rows[:-1])
        keep = first & (rows < len(self._fill))
        return event[keep], rows[keep], age[keep]

    def neighbours(self, recent: Rows, n: int, n_rows: int | None = None) -> tuple[Rows, F64]:
        """The ``n`` rows most co-engaged with ``recent[-window:]`` (scores summed over them), best first
        (ties by row); ``recent`` themselves are left out."""
        size = n_rows if n_rows is not None else len(self._fill)
        rows, scores = self.accumulate([recent], size).top(n, [recent])
        return rows[0][rows[0] >= 0], scores[0][rows[0] >= 0]

    def score(self, recent: Rows, candidates: Rows) -> F64:
        """Per candidate row, its co-engagement with ``recent[-window:]``: ``[n]``."""
        size = max(len(self._fill), int(candidates.max()) + 1 if len(candidates) else 0)
        out: F64 = self.accumulate([recent], size).at(candidates[None, :])[0]
        return out


_DENSE_MAX = 4_000_000  # events x rows up to which a dense bincount beats sorting the pairs


class CoScores:
    """A batch's co-visitation scores, sparse: the ``(event, row)`` pairs with a positive score,
    as sorted keys ``event * n_rows + row`` and their scores; or dense (:meth:`dense`), as the
    ``[n_events, n_rows]`` block a small catalog sums into, read by gathers (the sparse form is
    made from it only if :meth:`top` asks)."""

    def __init__(self, n_events: int, n_rows: int, keys: Rows, scores: F64) -> None:
        self.n_events, self.n_rows = n_events, n_rows
        self._sparse: tuple[Rows, F64] | None = (keys, scores)
        self._dense: F64 | None = None

    @classmethod
    def dense(cls, block: F64) -> CoScores:
        """Scores from the dense ``[n_events, n_rows]`` block (0: no co-engagement)."""
        out = cls(block.shape[0], block.shape[1], np.zeros(0, np.int64), np.zeros(0))
        out._sparse, out._dense = None, block
        return out

    @property
    def keys(self) -> Rows:
        return self._pairs()[0]

    @property
    def scores(self) -> F64:
        return self._pairs()[1]

    def _pairs(self) -> tuple[Rows, F64]:
        if self._sparse is None:
            flat = self._dense.ravel() if self._dense is not None else np.zeros(0)
            nonzero: Rows = np.flatnonzero(flat).astype(np.int64)
            self._sparse = (nonzero, flat[nonzero])
        return self._sparse

    def at(self, rows: Rows) -> F64:
        """Scores of ``rows`` ``[n_events, P]`` (``-1`` padding scores 0) for each event: ``[n_events, P]``."""
        keys = np.arange(self.n_events)[:, None] * self.n_rows + np.maximum(rows, 0)
        if self._dense is not None:  # one flat take: cheaper than a 2-d gather
            out: F64 = np.where(rows >= 0, np.take(self._dense, keys), 0.0)
            return out
        if not len(self.keys):
            return np.zeros(rows.shape)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = (self.keys[pos] == keys) & (rows >= 0)
        return np.where(hit, self.scores[pos], 0.0)

    def top(self, n: int, exclude: Sequence[Rows]) -> tuple[Rows, F64]:
        """Per event the ``n`` best rows (ties by row) not in that event's ``exclude``, ``-1`` padded:
        two ``[n_events, n]`` arrays."""
        rows = np.full((self.n_events, n), -1, np.int64)
        scores = np.zeros((self.n_events, n))
        if n <= 0:
            return rows, scores
        event, row, score = self._positive(exclude)
        if not len(event):
            return rows, scores
        # Only what reaches each event's n-th best score can be listed: a partition finds that score,
        # then only those few are sorted. Counts tie often, so the cut keeps every tie and a stable
        # sort gives them to the lower row (each event's entries come by row).
        counts = np.bincount(event, minlength=self.n_events)
        if counts.max() > n:
            cut = -np.partition(-_padded(event, counts, score, -np.inf), n - 1, axis=1)[:, n - 1]
            best = score >= cut[event]
            event, row, score = event[best], row[best], score[best]
            counts = np.bincount(event, minlength=self.n_events)
        block, ids = _padded(event, counts, score, -np.inf), _padded(event, counts, row, -1)
        take = min(n, block.shape[1])
        order = np.argsort(-block, axis=1, kind="stable")[:, :take]
        block, ids = np.take_along_axis(block, order, axis=1), np.take_along_axis(ids, order, axis=1)
        live = np.isfinite(block)
        rows[:, :take] = np.where(live, ids, -1)
        scores[:, :take] = np.where(live, block, 0.0)
        return rows, scores

    def _positive(self, exclude: Sequence[Rows]) -> tuple[Rows, Rows, F64]:
        """The ``(event, row, score)`` of every positive score whose row is not in that event's
        ``exclude``, by event then row."""
        ex_event, ex_row = flatten(exclude)
        inside = (ex_row >= 0) & (ex_row < self.n_rows) & (ex_event < self.n_events)
        ex_event, ex_row = ex_event[inside], ex_row[inside]
        if self._dense is not None:  # a mask of the block: cheaper than its sparse form and an isin
            live = self._dense > 0
            live[ex_event, ex_row] = False
            flat: Rows = np.flatnonzero(live)
            event, row = np.divmod(flat, self.n_rows)
            return event, row, self._dense.ravel()[flat]
        keep = ~np.isin(self.keys, ex_event * self.n_rows + ex_row)
        event, row = np.divmod(self.keys[keep], self.n_rows)
        return event, row, self.scores[keep]


def _padded(event: Rows, counts: Rows, values: npt.NDArray[G], fill: float) -> npt.NDArray[G]:
    """``values`` grouped by ``event`` (contiguous, ``counts`` each) laid out as ``[events, longest]``
    lines, ``fill`` after each event's last."""
    block: npt.NDArray[G] = np.full((len(counts), int(counts.max())), fill, values.dtype)
    block[event, np.arange(len(event)) - (np.cumsum(counts) - counts)[event]] = values
    return block
