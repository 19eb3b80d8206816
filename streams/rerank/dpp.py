"""Determinantal point process: fast greedy MAP inference (Chen, Zhang & Zhou, NeurIPS 2018)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from streams.rerank.base import Contexts, FloatArray, IndexArray, ListContext, Reranker, Scores
from streams.rerank.relevance import top_k


def dpp_quality(relevance: FloatArray, theta: float) -> npt.NDArray[np.float64]:
    """Item qualities ``r_u = exp(alpha * rel_u)``, ``alpha = theta / (2 (1 - theta))``, scaled so the best is 1.

    With ``L = diag(r) S diag(r)`` (``S`` the cosine similarities),
    ``log det L_Y = (theta * sum_{u in Y} rel_u + (1 - theta) * log det S_Y) / (1 - theta)``:
    the MAP list maximises the paper's relevance/diversity trade-off exactly. Dividing every ``r_u``
    by the largest scales ``det L_Y`` by the same factor for every list of a given length, so greedy
    choices are unchanged, ``exp`` cannot overflow as ``theta -> 1``, and the stopping threshold
    ``eps`` reads relative to the top candidate's gain (which is 1). ``theta`` must be below 1.

    >>> dpp_quality(np.array([1.0, 0.0], dtype=np.float32), 0.5).round(4).tolist()
    [1.0, 0.6065]
    """
    if not 0.0 <= theta < 1.0:
        raise ValueError(f"theta must be in [0, 1), got {theta}")
    alpha = theta / (2.0 * (1.0 - theta))
    rel = relevance.astype(np.float64)
    quality: npt.NDArray[np.float64] = np.exp(alpha * (rel - rel.max()))
    return quality


class DPP(Reranker):
    """Greedy MAP of a DPP with kernel ``L = diag(r) E E^T diag(r)``, never built (paper, Algorithm 1).

    Each pick maximises the marginal gain ``d_i^2 = det L_{Y+i} / det L_Y``. The Cholesky rows of
    ``L_Y`` are extended incrementally: a step needs only the new item's kernel column (one
    ``N x d`` matvec) and an ``O(N |Y|)`` update of every candidate's ``c_i`` and ``d_i^2``, so a list
    costs ``O(N k (d + k))``, i.e. ``O(N k d)`` for ``k <= d``, and the ``N x N`` kernel never exists.
    ``r = dpp_quality(relevance, theta)``: ``theta -> 1`` is pure relevance (``theta=1`` is exactly
    plain top-k); ``theta=0`` ignores relevance (ties, the first pick included, go to the lowest
    position). ``alpha`` multiplies raw relevance, so ``theta`` is tuned for a relevance scale.

    ``eps``: when the best remaining gain falls below it, every remaining candidate is (numerically) a
    combination of chosen ones (a near-duplicate, or a rank-exhausted kernel when ``k > d``) or has a
    quality ``r_i^2`` below ``eps`` times the top item's. Greedy order is then noise, so the
    remaining slots are filled by relevance and the output still has ``min(k, N)`` positions. The
    default ``1e-6`` sits above the ~1e-7 rounding of float32 embeddings (their norms and dot products);
    the paper's ``1e-10`` assumes a float64 kernel.

    ``window``: the sliding-window variant (paper, Algorithm 2) for long lists: each pick is scored
    against only the ``window - 1`` items before it, so every ``window`` consecutive items form a
    diverse set and items far up the list stop suppressing similar ones. Algorithm 2 downdates the
    Cholesky factor with ``w - 1`` Givens rotations (``O(w N)``) when the oldest item leaves; here
    the ``w - 2`` items left are refactored from their stored kernel rows instead: ``O(w^2 N)`` flops,
    but one small Cholesky and one matrix product instead of a Python loop over the window (faster
    in numpy for window sizes that matter), and no rounding carried from one window to the next.

    Two near-duplicates and one different item: the trade-off moves from diversity to relevance.

    >>> e = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    >>> rel = np.array([1.0, 0.95, 0.6], dtype=np.float32)
    >>> DPP(theta=0.5).select(rel, e, 2).tolist()
    [0, 2]
    >>> DPP(theta=0.99).select(rel, e, 2).tolist()
    [0, 1]

    With ``window=2`` only the previous pick counts, so the duplicate of the first may come back third:

    >>> e = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    >>> rel = np.array([1.0, 0.99, 0.5, 0.1], dtype=np.float32)
    >>> DPP(theta=0.8).select(rel, e, 4).tolist(), DPP(theta=0.8, window=2).select(rel, e, 4).tolist()
    ([0, 2, 3, 1], [0, 2, 1, 3])
    """

    name = "dpp"

    def __init__(
        self, theta: float = 0.7, window: int | None = None, eps: float = 1e-6, shortlist: int = 50
    ) -> None:
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1], got {theta}")
        if window is not None and window < 2:
            raise ValueError(f"window must be at least 2 (or None), got {window}")
        if not eps > 0.0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.theta = theta
        self.window = window
        self.eps = eps
        #: :meth:`select_rows` reads the vectors of this many of the most relevant candidates first (at
        #: least ``4 k``; 0: all). 50 made MovieLens' lists with a quarter of the work, the same lists.
        self.shortlist = shortlist

    def select(
        self, relevance: FloatArray, embeddings: FloatArray, k: int, context: ListContext | None = None
    ) -> IndexArray:
        n = len(relevance)
        k = min(k, n)
        if k <= 0:
            return np.empty(0, dtype=np.intp)
        if self.theta == 1.0:
            return top_k(relevance, k)
        q = dpp_quality(relevance, self.theta)
        diag = q * q  # L_ii for unit rows
        d2 = diag.copy()  # marginal gains; chosen items are set to -inf and stay there
        # A window of w-1 items that a k-list never fills is just Algorithm 1.
        cap = k if self.window is None or self.window - 1 >= k else self.window - 1
        windowed = cap < k
        c = np.empty((cap, n))  # rows: Cholesky coefficients of every candidate against the (window) set
        window_rows = np.empty((cap if windowed else 0, n))  # L[window, :], oldest first
        size = 0
        chosen = np.empty(k, dtype=np.intp)
        for t in range(k):
            j = int(np.argmax(d2))
            if not d2[j] >= self.eps:  # `not >=` also stops on NaN
                return self._fill_by_relevance(chosen[:t], relevance, k)
            chosen[t] = j
            if t == k - 1:
                break
            col = (embeddings @ embeddings[j]) * (q * q[j])  # L[:, j]: the only kernel entries needed
            if windowed and size == cap:
                # The oldest leaves: refactor the rest (chosen[t-size:t]) from their kernel rows.
                size -= 1
                window_rows[:size] = window_rows[1:]
                d2[:] = diag
                if size:
                    factor = np.linalg.cholesky(window_rows[:size, chosen[t - size : t]])
                    c[:size] = np.linalg.inv(factor) @ window_rows[:size]
                    d2 -= np.einsum("ij,ij->j", c[:size], c[:size])
                d2[chosen[:t]] = -np.inf
            dj = math.sqrt(d2[j])
            e = (col - c[:size, j] @ c[:size]) / dj if size else col / dj
            c[size] = e
            if windowed:
                window_rows[size] = col
            size += 1
            d2 -= e * e
            d2[j] = -np.inf
        return chosen

    def select_many(self, relevance: Scores, embeddings: FloatArray, k: int, contexts: Contexts = None) -> IndexArray:
        """Algorithm 1 for every list at once: each greedy step is one batched kernel column and one
        update of every list's gains; lists that stop early (``eps``) are filled by relevance as in
        :meth:`select`. The windowed variant and ``theta = 1`` go list by list."""
        if self.window is not None or self.theta == 1.0:
            return super().select_many(relevance, embeddings, k, contexts)
        chosen, stopped, _ = self._greedy(relevance, embeddings, k)
        valid = np.isfinite(relevance)
        for b in np.flatnonzero(stopped).tolist():  # rare: a list ran out of diverse candidates
            taken = chosen[b][chosen[b] >= 0]
            n = int(valid[b].sum())
            filled = self._fill_by_relevance(taken, relevance[b, :n].astype(np.float32), min(k, n))
            chosen[b, : len(filled)] = filled
        return chosen

    def select_rows(
        self, relevance: Scores, vectors: FloatArray, rows: IndexArray, k: int, contexts: Contexts = None
    ) -> IndexArray:
        """:meth:`select_many` on ``vectors[rows]``, reading the vectors of the :attr:`shortlist` most
        relevant candidates only, for every list where that provably picks the same.

        A candidate's gain starts at its quality ``r_i^2`` and only falls, so when every gain a list
        picks on the shortlist is above every left-out candidate's ``r_i^2``, none of those could
        have been picked at any step, and the lists are the same, bit for bit (each candidate's
        gains are computed on its own). The other lists, rare when relevance spreads, are made from
        the whole pool.

        >>> rng = np.random.default_rng(0)
        >>> vectors = rng.normal(size=(500, 8)).astype(np.float32)
        >>> vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        >>> rows = rng.permutation(500)[:300].reshape(3, 100)
        >>> rel = rng.normal(scale=3.0, size=(3, 100))
        >>> short, whole = DPP(shortlist=40), DPP(shortlist=0)
        >>> bool((short.select_rows(rel, vectors, rows, 10) == whole.select_many(rel, vectors[rows], 10)).all())
        True
        """
        n_lists, width = relevance.shape
        m = max(self.shortlist, 4 * k) if self.shortlist else 0
        if self.window is not None or self.theta == 1.0 or not m or width <= m or not n_lists:
            return self.select_many(relevance, np.take(vectors, rows, axis=0), k, contexts)
        q = self._quality(relevance)
        # The shortlist in pool order, so that ties between gains go the same way.
        keep = np.sort(np.argpartition(-relevance, m - 1, axis=1)[:, :m], axis=1)
        left_out = np.ones((n_lists, width), bool)
        np.put_along_axis(left_out, keep, False, axis=1)
        bound = np.max(np.where(left_out, q * q, 0.0), axis=1)
        short_rel = np.take_along_axis(relevance, keep, axis=1)
        short_vectors = np.take(vectors, np.take_along_axis(rows, keep, axis=1), axis=0)  # take: cheaper than []
        chosen, stopped, lowest = self._greedy(short_rel, short_vectors, k)
        out = np.where(chosen >= 0, np.take_along_axis(keep, np.maximum(chosen, 0), axis=1), -1)
        redo = np.flatnonzero(stopped | ~(lowest > bound))
        if len(redo):
            subset = None if contexts is None else [contexts[b] for b in redo.tolist()]
            out[redo] = self.select_many(relevance[redo], np.take(vectors, rows[redo], axis=0), k, subset)
        return out

    def _quality(self, relevance: Scores) -> npt.NDArray[np.float64]:
        """:func:`dpp_quality` of every list at once (0 on the padding)."""
        valid = np.isfinite(relevance)
        alpha = self.theta / (2.0 * (1.0 - self.theta))
        rel = np.where(valid, relevance, 0.0).astype(np.float64)
        top = np.max(np.where(valid, rel, -np.inf), axis=1, keepdims=True)
        quality: npt.NDArray[np.float64] = np.where(
            valid, np.exp(alpha * (rel - np.where(np.isfinite(top), top, 0.0))), 0.0
        )
        return quality

    def _greedy(
        self, relevance: Scores, embeddings: FloatArray, k: int
    ) -> tuple[IndexArray, npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """The batched greedy steps: per list the positions picked (``-1`` after a stop), whether it
        stopped early, and the lowest gain it picked on."""
        n_lists, width = relevance.shape
        k = min(k, width)
        chosen = np.full((n_lists, k), -1, np.intp)
        stopped = np.zeros(n_lists, bool)
        lowest = np.full(n_lists, np.inf)
        if k <= 0 or n_lists == 0:
            return chosen, stopped, lowest
        q = self._quality(relevance)
        d2 = np.where(np.isfinite(relevance), q * q, -np.inf)
        c = np.zeros((k, n_lists, width))
        lists = np.arange(n_lists)
        for t in range(k):
            j = np.argmax(d2, axis=1)
            gain = d2[lists, j]
            stopped |= ~(gain >= self.eps)  # `not >=` also stops on NaN
            if stopped.all():
                break
            chosen[~stopped, t] = j[~stopped]
            lowest = np.minimum(lowest, np.where(stopped, np.inf, gain))
            if t == k - 1:
                break
            col = np.einsum("bpd,bd->bp", embeddings, embeddings[lists, j]) * (q * q[lists, j][:, None])
            dj = np.sqrt(np.where(stopped, 1.0, gain))
            e = col - np.einsum("tb,tbp->bp", c[:t, lists, j], c[:t]) if t else col
            e = e / dj[:, None]
            c[t] = e
            d2 -= e * e
            d2[lists, j] = -np.inf
        return chosen, stopped, lowest

    @staticmethod
    def _fill_by_relevance(taken: IndexArray, relevance: FloatArray, k: int) -> IndexArray:
        left = np.ones(len(relevance), dtype=bool)
        left[taken] = False
        order = top_k(relevance, len(relevance))
        rest = order[left[order]][: k - len(taken)]
        return np.concatenate([taken, rest]).astype(np.intp)
