"""Plain top-k by relevance: the no-diversity baseline every other reranker is compared with."""

from __future__ import annotations

import numpy as np

from streams.rerank.base import Contexts, FloatArray, IndexArray, ListContext, Reranker, Scores


def top_k(scores: FloatArray, k: int) -> IndexArray:
    """Positions of the ``k`` largest scores, best first, ties broken by position.

    >>> top_k(np.array([0.1, 0.9, 0.5, 0.9], dtype=np.float32), 3).tolist()
    [1, 3, 2]
    """
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    # argpartition keeps this O(N) for the large candidate pools; a stable sort orders the k.
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order].astype(np.intp)


class TopK(Reranker):
    """Relevance only.

    >>> TopK().rerank(["a", "b", "c"], np.array([0.2, 0.9, 0.5], dtype=np.float32),
    ...               np.eye(3, dtype=np.float32), k=2)
    ['b', 'c']
    """

    name = "relevance"

    def select(
        self, relevance: FloatArray, embeddings: FloatArray, k: int, context: ListContext | None = None
    ) -> IndexArray:
        return top_k(relevance, k)

    def select_many(self, relevance: Scores, embeddings: FloatArray, k: int, contexts: Contexts = None) -> IndexArray:
        order = np.argsort(-relevance, axis=1, kind="stable")[:, :k]  # ties by position, as top_k
        picked = np.take_along_axis(relevance, order, axis=1)
        return np.where(np.isfinite(picked), order, -1).astype(np.intp)
