"""Calibrated recommendations (Steck, RecSys 2018): the list's category mix follows the user's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.rerank.base import FloatArray, IndexArray, ListContext, Reranker
from streams.rerank.relevance import top_k


def _item_weights(categories: Sequence[str]) -> dict[str, float]:
    """Steck's ``q(g|i)``: an item's categories share its unit weight equally (duplicates counted once)."""
    unique = dict.fromkeys(categories)
    return {g: 1.0 / len(unique) for g in unique}


def _normalised(user_distribution: Mapping[str, float]) -> dict[str, float]:
    if any(not (math.isfinite(v) and v >= 0.0) for v in user_distribution.values()):
        raise ValueError("user_distribution must have finite, non-negative weights")
    total = sum(user_distribution.values())
    return {g: v / total for g, v in user_distribution.items() if v > 0.0} if total > 0.0 else {}


def miscalibration(
    list_categories: Sequence[Sequence[str]], user_distribution: Mapping[str, float], alpha: float = 0.01
) -> float:
    """``KL(p || q~)`` of a list: ``p`` the user's (normalised) distribution, ``q~ = (1-alpha) q + alpha p``.

    ``q`` weighs the list's items equally, each spread over its categories as ``q(g|i)``; an item with
    no category adds weight but no mass. An empty ``p`` gives 0.

    >>> round(miscalibration([("drama",), ("comedy",)], {"drama": 1, "comedy": 1}), 6)
    0.0
    >>> round(miscalibration([("drama",), ("drama",)], {"drama": 1, "comedy": 1}), 4)
    1.9585
    """
    p = _normalised(user_distribution)
    q = dict.fromkeys(p, 0.0)
    for categories in list_categories:
        for g, w in _item_weights(categories).items():
            if g in q:
                q[g] += w / len(list_categories)
    return sum(pg * math.log(pg / ((1.0 - alpha) * q[g] + alpha * pg)) for g, pg in p.items())


@dataclass(frozen=True)
class _Context:
    """One request's categories, compiled for vectorised gains: one entry per (item, category in ``p``)."""

    n: int
    p: npt.NDArray[np.float64]  # [G] the user's distribution over its support
    item: npt.NDArray[np.intp]  # [E] entry -> candidate position (sorted, so an item's entries are contiguous)
    cat: npt.NDArray[np.intp]  # [E] entry -> category in p
    weight: npt.NDArray[np.float64]  # [E] q(g|i)
    start: npt.NDArray[np.intp]  # [N + 1] an item's entries are start[i]:start[i + 1]


class Calibrated(Reranker):
    """Greedy ``max (1 - lambda) * sum_{i in list} rel(i) - lambda * KL(p || q~(list))`` (Steck, 2018).

    ``p`` is the user's category distribution, ``q~ = (1 - alpha) q + alpha p`` the list's, smoothed
    so KL stays finite while a category is missing (``alpha = 0.01`` as in the paper); items weigh
    equally in ``q`` (the paper's rank weights ``w_r`` set to 1) and each spreads its weight evenly
    over its categories. Each step scores all candidates at once: adding item ``i`` only changes
    ``q~`` on ``i``'s categories, so its KL change is a sum over its (item, category) entries, one
    ``log1p`` per entry and a ``bincount`` per step, ``O(k * entries)`` per list.

    Categories are per request: ``select`` reads them from its :class:`ListContext`, or
    ``bind(item_categories, user_distribution)`` returns a new, bound instance (the policy object
    stays shareable and stateless) that plugs in wherever a :class:`Reranker` is expected. An
    unbound instance, or a user with no distribution yet (cold
    start), ranks by relevance alone (plain top-k), as does ``lambda_=0``.

    One drama fan-half, comedy fan-half; the two most relevant items are dramas:

    >>> cal = Calibrated(lambda_=0.5).bind([("drama",), ("drama",), ("comedy",)], {"drama": 1, "comedy": 1})
    >>> rel, emb = np.array([0.9, 0.8, 0.3], dtype=np.float32), np.eye(3, dtype=np.float32)
    >>> cal.select(rel, emb, 2).tolist()
    [0, 2]
    >>> Calibrated(lambda_=0.5).select(rel, emb, 2).tolist()  # unbound: top-k
    [0, 1]
    """

    name = "calibrated"
    needs_context = True

    def __init__(self, lambda_: float = 0.5, alpha: float = 0.01) -> None:
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.lambda_ = lambda_
        self.alpha = alpha
        self._context: _Context | None = None

    @property
    def bound(self) -> bool:
        return self._context is not None

    def bind(self, item_categories: Sequence[Sequence[str]], user_distribution: Mapping[str, float]) -> Calibrated:
        """A copy bound to one request: ``item_categories[i]`` are candidate ``i``'s, ``p`` the user's weights."""
        p = _normalised(user_distribution)
        index = {g: c for c, g in enumerate(p)}
        item: list[int] = []
        cat: list[int] = []
        weight: list[float] = []
        start = [0]
        for i, categories in enumerate(item_categories):
            unique = dict.fromkeys(categories)  # q(g|i) = 1 / len(unique), as in _item_weights
            for g in unique:
                # Mass outside p's support only dilutes q; the 1/|list| factor already accounts for it.
                c = index.get(g)
                if c is not None:
                    item.append(i)
                    cat.append(c)
                    weight.append(1.0 / len(unique))
            start.append(len(item))
        bound = Calibrated(self.lambda_, self.alpha)
        bound._context = _Context(
            n=len(item_categories),
            p=np.fromiter(p.values(), dtype=np.float64, count=len(p)),
            item=np.array(item, dtype=np.intp),
            cat=np.array(cat, dtype=np.intp),
            weight=np.array(weight, dtype=np.float64),
            start=np.array(start, dtype=np.intp),
        )
        return bound

    def select(
        self, relevance: FloatArray, embeddings: FloatArray, k: int, context: ListContext | None = None
    ) -> IndexArray:
        if context is not None:
            return self.bind(context.categories, context.user_categories).select(relevance, embeddings, k)
        ctx = self._context
        if ctx is not None and len(relevance) != ctx.n:
            raise ValueError(f"bound to {ctx.n} candidates, got {len(relevance)}")
        n = len(relevance)
        k = min(k, n)
        if ctx is None or len(ctx.p) == 0 or self.lambda_ == 0.0 or k <= 0:
            return top_k(relevance, k)
        a, lam = self.alpha, self.lambda_
        rel = (1.0 - lam) * relevance.astype(np.float64)
        entry_p = lam * ctx.p[ctx.cat]
        mass = np.zeros(len(ctx.p))  # sum over the list so far of q(g|i)
        chosen = np.empty(k, dtype=np.intp)
        for t in range(k):
            # q~ if the new item had no mass on g: the baseline each candidate's entries are measured from.
            base = (1.0 - a) / (t + 1) * mass + a * ctx.p
            gain = entry_p * np.log1p((1.0 - a) / (t + 1) * ctx.weight / base[ctx.cat])  # -lambda * delta KL
            score = rel + np.bincount(ctx.item, weights=gain, minlength=n)
            score[chosen[:t]] = -np.inf
            j = int(np.argmax(score))
            chosen[t] = j
            own = slice(ctx.start[j], ctx.start[j + 1])
            mass[ctx.cat[own]] += ctx.weight[own]
        return chosen
