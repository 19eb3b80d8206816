"""Brute-force references for the rerankers: short, slow and obviously correct.

For tests and benchmarks only, never for serving: they build the full ``N x N`` matrices and
re-evaluate every candidate from scratch at every step. Tie-breaking matches the fast versions
(the lowest position wins; remaining slots after an early stop are filled by relevance).
"""

from __future__ import annotations

import math

import numpy as np

from streams.rerank.base import FloatArray, IndexArray
from streams.rerank.dpp import dpp_quality
from streams.rerank.relevance import top_k


def naive_dpp_greedy(
    relevance: FloatArray,
    embeddings: FloatArray,
    k: int,
    theta: float,
    *,
    window: int | None = None,
    eps: float = 1e-6,
) -> IndexArray:
    """Greedy DPP MAP: at each step, the candidate maximising ``log det L_{S+i}`` by ``slogdet``.

    ``L = diag(r) E E^T diag(r)`` is built explicitly (float64) with ``r = dpp_quality(relevance, theta)``.
    With ``window``, ``S`` is only the last ``window - 1`` picks. Stops when the best gain
    ``det L_{S+i} / det L_S`` is below ``eps``, then fills by relevance, as :class:`~streams.rerank.dpp.DPP`.

    >>> e = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    >>> naive_dpp_greedy(np.array([1.0, 0.95, 0.6], dtype=np.float32), e, 2, theta=0.5).tolist()
    [0, 2]
    """
    n = len(relevance)
    k = min(k, n)
    if theta == 1.0 or k <= 0:
        return top_k(relevance, k)
    q = dpp_quality(relevance, theta)
    emb = embeddings.astype(np.float64)
    kernel = q[:, None] * (emb @ emb.T) * q[None, :]
    chosen: list[int] = []
    while len(chosen) < k:
        context = chosen if window is None else chosen[max(0, len(chosen) - (window - 1)) :]
        base = np.linalg.slogdet(kernel[np.ix_(context, context)])[1] if context else 0.0
        best, best_logdet = -1, -math.inf
        for i in range(n):
            if i in chosen:
                continue
            subset = [*context, i]
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(subset, subset)])
            if sign > 0 and logdet > best_logdet:
                best, best_logdet = i, float(logdet)
        if best < 0 or math.exp(best_logdet - base) < eps:
            break
        chosen.append(best)
    rest = [int(i) for i in top_k(relevance, n) if i not in chosen]
    return np.array(chosen + rest[: k - len(chosen)], dtype=np.intp)


def naive_mmr(relevance: FloatArray, embeddings: FloatArray, k: int, lambda_: float) -> IndexArray:
    """MMR from the full similarity matrix: ``argmax lambda*rel(i) - (1-lambda)*max_{j in S} cos(i, j)``.

    >>> e = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    >>> naive_mmr(np.array([1.0, 0.95, 0.6], dtype=np.float32), e, 2, lambda_=0.5).tolist()
    [0, 2]
    """
    n = len(relevance)
    sims = embeddings @ embeddings.T
    chosen: list[int] = []
    for _ in range(min(k, n)):
        best, best_score = -1, -math.inf
        for i in range(n):
            if i in chosen:
                continue
            redundancy = max(float(sims[i, j]) for j in chosen) if chosen else 0.0
            score = lambda_ * float(relevance[i]) - (1.0 - lambda_) * redundancy
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return np.array(chosen, dtype=np.intp)
