"""Nearest-neighbour search over item embeddings (inner product on unit vectors = cosine)."""

from __future__ import annotations

import abc

import hnswlib
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


class VectorIndex(abc.ABC):
    """Rows are addressed by dense integer ids ``0..n-1`` that the :class:`Catalog` assigns."""

    #: Whether search compares every row (so a product over any vectors of the rows can stand in).
    exact: bool = False

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abc.abstractmethod
    def upsert(self, rows: Ints, vectors: F32) -> None:
        """Add rows, or replace the vectors of rows already present."""

    @abc.abstractmethod
    def search_many(self, queries: F32, k: int) -> tuple[Ints, F32]:
        """For each row of ``queries`` ``[B, d]``, the ``min(k, n)`` rows with the largest inner
        product (and those products), best first: two ``[B, min(k, n)]`` arrays."""

    def similarities(self, queries: F32) -> F32 | None:
        """Every row's inner product with each query, ``[B, n]``, where the index computes them anyway
        (exact search); ``None`` for approximate indexes."""
        return None

    def search(self, query: F32, k: int) -> tuple[Ints, F32]:
        """:meth:`search_many` for one query."""
        rows, scores = self.search_many(query.reshape(1, -1), k)
        return rows[0], scores[0]

    @abc.abstractmethod
    def __len__(self) -> int: ...


_QUERY_BLOCK = 16


class ExactIndex(VectorIndex):
    """Brute force with numpy: exact, and fast enough for catalogs of tens of thousands.

    >>> ix = ExactIndex(2)
    >>> ix.upsert(np.array([0, 1, 2]), np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32))
    >>> ix.search(np.array([0, 1], np.float32), 2)[0].tolist()
    [1, 2]
    """

    exact = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._n = 0

    def upsert(self, rows: Ints, vectors: F32) -> None:
        need = int(rows.max()) + 1 if len(rows) else 0
        if need > len(self._vectors):
            grown = np.zeros((max(need, 2 * len(self._vectors)), self.dim), dtype=np.float32)
            grown[: self._n] = self._vectors[: self._n]
            self._vectors = grown
        self._vectors[rows] = vectors
        self._n = max(self._n, need)

    def similarities(self, queries: F32) -> F32:
        return blocked_product(queries, self._vectors[: self._n])

    def search_many(self, queries: F32, k: int) -> tuple[Ints, F32]:
        return top_rows(self.similarities(queries), k)

    def __len__(self) -> int:
        return self._n


class HnswIndex(VectorIndex):
    """HNSW graph (hnswlib): sub-linear search for large catalogs; approximate.

    >>> ix = HnswIndex(2)
    >>> ix.upsert(np.array([0, 1, 2]), np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32))
    >>> ix.search(np.array([0, 1], np.float32), 2)[0].tolist()
    [1, 2]
    """

    def __init__(self, dim: int, m: int = 16, ef_construction: int = 200, ef_search: int = 400) -> None:
        super().__init__(dim)
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._capacity = 1024
        self._index.init_index(max_elements=self._capacity, M=m, ef_construction=ef_construction)
        self._ef_search = ef_search

    def upsert(self, rows: Ints, vectors: F32) -> None:
        if len(rows) == 0:
            return
        need = int(rows.max()) + 1
        if need > self._capacity:
            self._capacity = max(need, 2 * self._capacity)
            self._index.resize_index(self._capacity)
        self._index.add_items(vectors, rows)

    def search_many(self, queries: F32, k: int) -> tuple[Ints, F32]:
        k = min(k, len(self))
        if k == 0:
            return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)
        # ef must be at least k for hnswlib to return k results.
        self._index.set_ef(max(self._ef_search, k))
        labels, distances = self._index.knn_query(queries, k=k, num_threads=1)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def __len__(self) -> int:
        return int(self._index.get_current_count())


def top_rows(scores: F32, k: int) -> tuple[Ints, F32]:
    """Per row of ``scores`` ``[B, n]``, the ``min(k, n)`` largest columns and their scores, best first.

    >>> top_rows(np.array([[0.1, 0.9, 0.5]], np.float32), 2)[0].tolist()
    [[1, 2]]
    """
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return np.empty((len(scores), 0), np.int64), np.empty((len(scores), 0), np.float32)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(k), (len(scores), 1))
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_scores, order, axis=1)


def blocked_product(queries: F32, vectors: F32) -> F32:
    """``queries @ vectors.T``, ``[B, n]``, in matrix products over the whole batch (far cheaper than
    one matrix-vector product per query).

    BLAS picks its kernels by shape, and a row's rounding follows them, so the queries go in
    zero-padded blocks of a fixed size: a query's scores then depend only on its slot in its block,
    never on the queries after it (a list must not depend on the events after it, not even in the
    last bit). The slot can still move a last bit: a query's scores at another place in a batch may
    differ by one unit in the last place.
    """
    n, block = len(queries), _QUERY_BLOCK
    padded = np.zeros((-(-n // block) * block, vectors.shape[1]), np.float32)
    padded[:n] = queries
    vectors_t = vectors.T
    scores = np.empty((len(padded), len(vectors)), np.float32)
    for start in range(0, len(padded), block):
        np.matmul(padded[start : start + block], vectors_t, out=scores[start : start + block])
    out: F32 = scores[:n]
    return out
