"""Metrics of one scored list and of a whole run: relevance (HR, NDCG, MRR, recall) and beyond it.

Per list, against the user's next positives (``targets``, a set): binary relevance throughout,
so these equal the usual IR definitions (``ranx`` agrees on the test fixtures). Beyond accuracy:
intra-list diversity on embeddings and on genres, genres covered, novelty, calibration (Steck's
KL) and the exploration share; per run: catalog coverage and the Gini coefficient of exposure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streams.metrics.quality import EXPLORE, intra_list_diversity
from streams.rerank.calibration import miscalibration

F32 = npt.NDArray[np.float32]

#: The keys of a run's metrics, in the order of the report's columns.
METRICS = (
    "hr@10", "ndcg@10", "mrr", "recall@10", "ild@10", "genre_ild@10", "genres@10",
    "coverage", "novelty", "gini", "calibration_kl", "explore_share",
)


def hit_rate(items: Sequence[str], targets: set[str], k: int = 10) -> float:
    """1 if any target is in the top ``k``.

    >>> hit_rate(["a", "b", "c"], {"c"}, k=2), hit_rate(["a", "b", "c"], {"c"}, k=3)
    (0.0, 1.0)
    """
    return float(any(i in targets for i in items[:k]))


def ndcg(items: Sequence[str], targets: set[str], k: int = 10) -> float:
    """Binary-relevance NDCG@k: DCG over the ideal DCG of ``min(len(targets), k)`` hits on top.

    >>> round(ndcg(["x", "a"], {"a"}), 4), ndcg(["a", "b"], {"a", "b"}), ndcg(["x"], set())
    (0.6309, 1.0, 0.0)
    """
    if not targets:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, i in enumerate(items[:k]) if i in targets)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(targets), k)))
    return dcg / ideal


def reciprocal_rank(items: Sequence[str], targets: set[str]) -> float:
    """1 / rank of the first target in the list (0 when none is there).

    >>> reciprocal_rank(["x", "y", "a"], {"a", "b"})
    0.3333333333333333
    """
    return next((1.0 / (rank + 1) for rank, i in enumerate(items) if i in targets), 0.0)


def recall(items: Sequence[str], targets: set[str], k: int = 10) -> float:
    """Share of the targets found in the top ``k``.

    >>> recall(["a", "x", "b"], {"a", "b", "c", "d"}, k=2)
    0.25
    """
    return len(targets.intersection(items[:k])) / len(targets) if targets else 0.0


def genre_ild(genres: Sequence[frozenset[str]]) -> float | None:
    """Mean pairwise Jaccard distance ``1 - |A & B| / |A | B|`` of the items' genre sets; None below 2 items.

    Two items without any genre count as identical (distance 0), one without and one with as distance 1.

    >>> genre_ild([frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"})])
    0.8333333333333334
    """
    n = len(genres)
    if n < 2:
        return None
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            union = genres[i] | genres[j]
            total += 1.0 - len(genres[i] & genres[j]) / len(union) if union else 0.0
    return total / (n * (n - 1) / 2)


def genres_covered(genres: Sequence[frozenset[str]]) -> int:
    """How many distinct genres the list's items have between them.

    >>> genres_covered([frozenset({"a", "b"}), frozenset({"b", "c"}), frozenset()])
    3
    """
    return len(frozenset().union(*genres))


def novelty(counts: Sequence[float], total: float, n_items: int) -> float | None:
    """Mean ``-log2 p(i)`` of the list's items, ``p(i) = (count_i + 1) / (total + n_items)``: the share of all
    events so far that were on item ``i``, add-one smoothed so an item nobody has touched yet is finite.

    >>> novelty([3, 0], total=6, n_items=2)  # p = 4/8 and 1/8: (1 + 3) / 2
    2.0
    """
    if not len(counts):
        return None
    return float(np.mean([-math.log2((c + 1.0) / (total + n_items)) for c in counts]))


def gini(exposure: npt.ArrayLike) -> float:
    """Gini coefficient of exposure over every catalog item (unexposed items count, as zeros):
    0 when all items are shown equally often, ``1 - 1/n`` when one item takes it all.

    >>> gini([1, 1, 1, 1]), gini([0, 0, 0, 4]), round(gini([1, 2, 3, 4]), 4)
    (0.0, 0.75, 0.25)
    """
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def calibration_kl(genres: Sequence[Sequence[str]], user_genres: Mapping[str, float]) -> float | None:
    """Steck's miscalibration ``KL(p || (1 - 0.01) q + 0.01 p)`` of a list; None for a user with no
    genre distribution yet (the reranker's own :func:`~streams.rerank.calibration.miscalibration`).

    >>> round(calibration_kl([("drama",), ("drama",)], {"drama": 1, "comedy": 1}), 4)
    1.9585
    """
    if not genres or sum(user_genres.values()) <= 0:
        return None
    return miscalibration(genres, user_genres)


def explore_share(reasons: Sequence[str]) -> float | None:
    """Share of a list's items put there to explore (reason ``explore``).

    >>> explore_share(["similar", "explore"])
    0.5
    """
    return sum(r == EXPLORE for r in reasons) / len(reasons) if reasons else None


@dataclass
class ScoredList:
    """One list shown to a user, scored at one positive event of theirs, with what the metrics need from then."""

    user_id: str
    event_id: str  # the positive event the list is scored at
    ts: float
    policy: str
    items: list[str]
    reasons: list[str]
    targets: list[str]  # the user's next positives, this event's item first
    counts: list[float]  # per item: events on it so far (before this one), for novelty
    total: float  # events so far
    user_genres: dict[str, float]  # Steck's p(g|u) from the user's positives so far (unnormalised)

    def to_json(self) -> dict[str, object]:
        """The ``--dump-recs`` line: what anyone needs to recompute the metrics."""
        return {"user_id": self.user_id, "event_id": self.event_id, "ts": self.ts, "policy": self.policy,
                "items": self.items, "targets": self.targets}


@dataclass
class RunMetrics:
    """Averages the per-list metrics over a run's scored lists and adds the run-level ones.

    ``item_rows`` maps item ids to rows of ``vectors`` and ``genres``.
    """

    item_rows: Mapping[str, int]
    vectors: F32
    genres: Sequence[frozenset[str]]
    k: int = 10
    lists: int = 0
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _exposure: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self._exposure = np.zeros(len(self.genres), np.int64)

    def _add(self, name: str, value: float | None) -> None:
        if value is not None:
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1

    def add(self, scored: ScoredList) -> dict[str, float | None]:
        """Score one list (and return its values, None where undefined)."""
        items, targets = scored.items[: self.k], set(scored.targets)
        rows = [self.item_rows[i] for i in items]
        genres = [self.genres[r] for r in rows]
        values: dict[str, float | None] = {
            "hr@10": hit_rate(items, targets, self.k),
            "ndcg@10": ndcg(items, targets, self.k),
            "mrr": reciprocal_rank(items, targets),
            "recall@10": recall(items, targets, self.k),
            "ild@10": intra_list_diversity(self.vectors[rows]),
            "genre_ild@10": genre_ild(genres),
            "genres@10": float(genres_covered(genres)),
            "novelty": novelty(scored.counts[: self.k], scored.total, len(self.genres)),
            "calibration_kl": calibration_kl([tuple(sorted(g)) for g in genres], scored.user_genres),
            "explore_share": explore_share(scored.reasons[: self.k]),
        }
        for name, value in values.items():
            self._add(name, value)
        np.add.at(self._exposure, rows, 1)
        self.lists += 1
        return values

    def summary(self) -> dict[str, float]:
        """Every metric of :data:`METRICS`: per-list ones averaged over the lists where they are defined."""
        out = {name: self._sums.get(name, 0.0) / max(self._counts.get(name, 0), 1) for name in METRICS}
        out["coverage"] = float((self._exposure > 0).sum()) / max(len(self._exposure), 1)
        out["gini"] = gini(self._exposure)
        return out
