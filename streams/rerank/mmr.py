"""Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998)."""

from __future__ import annotations

import numpy as np

from streams.rerank.base import Contexts, FloatArray, IndexArray, ListContext, Reranker, Scores


class MMR(Reranker):
    """Greedy MMR: pick ``argmax lambda*rel(i) - (1-lambda)*max_{j in S} cos(i, j)``.

    ``lambda_=1`` is plain top-k; smaller values trade relevance for diversity. The
    max-similarity to the selected set is updated incrementally, so a list costs
    ``O(N k d)`` and never builds the ``N x N`` similarity matrix.

    Two near-duplicates and one different item: with weight on diversity, the second
    pick skips the duplicate.

    >>> e = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    >>> MMR(lambda_=0.5).select(np.array([1.0, 0.95, 0.6], dtype=np.float32), e, 2).tolist()
    [0, 2]
    >>> MMR(lambda_=1.0).select(np.array([1.0, 0.95, 0.6], dtype=np.float32), e, 2).tolist()
    [0, 1]
    """

    name = "mmr"

    def __init__(self, lambda_: float = 0.7) -> None:
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        self.lambda_ = lambda_

    def select(
        self, relevance: FloatArray, embeddings: FloatArray, k: int, context: ListContext | None = None
    ) -> IndexArray:
        n = len(relevance)
        k = min(k, n)
        chosen = np.empty(k, dtype=np.intp)
        if k == 0:
            return chosen
        rel = self.lambda_ * relevance.astype(np.float64)
        max_sim = np.full(n, -np.inf)
        available = np.ones(n, dtype=bool)
        for step in range(k):
            # Before anything is chosen there is no redundancy term: the first pick is the most relevant.
            penalty = (1.0 - self.lambda_) * max_sim if step else 0.0
            score = np.where(available, rel - penalty, -np.inf)
            best = int(np.argmax(score))
            chosen[step] = best
            available[best] = False
            np.maximum(max_sim, embeddings @ embeddings[best], out=max_sim)
        return chosen

    def select_many(self, relevance: Scores, embeddings: FloatArray, k: int, contexts: Contexts = None) -> IndexArray:
        """The greedy steps of :meth:`select` for every list at once (one batched product a step)."""
        n_lists, width = relevance.shape
        k = min(k, width)
        chosen = np.full((n_lists, k), -1, np.intp)
        rel = self.lambda_ * relevance.astype(np.float64)
        available = np.isfinite(rel)
        max_sim = np.full((n_lists, width), -np.inf)
        lists = np.arange(n_lists)
        for step in range(k):
            penalty = (1.0 - self.lambda_) * max_sim if step else 0.0
            score = np.where(available, rel - penalty, -np.inf)
            best = np.argmax(score, axis=1)
            live = available[lists, best]
            chosen[live, step] = best[live]
            available[lists, best] = False
            sims = np.einsum("bpd,bd->bp", embeddings, embeddings[lists, best])
            np.maximum(max_sim, sims, out=max_sim)
        return chosen
