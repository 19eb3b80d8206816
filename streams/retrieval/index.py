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

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abc.abstractmethod
    def upsert(self, rows: Ints, vectors: F32) -> None:
        """Add rows, or replace the vectors of rows already present."""

    @abc.abstractmethod
    def search(self, query: F32, k: int) -> tuple[Ints, F32]:
        """The ``k`` rows with the largest inner product with ``query`` (and those products), best first."""

    @abc.abstractmethod
    def __len__(self) -> int: ...


class ExactIndex(VectorIndex):
    """Brute force with numpy: exact, and fast enough for catalogs of tens of thousands.

    >>> ix = ExactIndex(2)
    >>> ix.upsert(np.array([0, 1, 2]), np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32))
    >>> ix.search(np.array([0, 1], np.float32), 2)[0].tolist()
    [1, 2]
    """

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

    def search(self, query: F32, k: int) -> tuple[Ints, F32]:
        scores = self._vectors[: self._n] @ query
        k = min(k, self._n)
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)

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

    def search(self, query: F32, k: int) -> tuple[Ints, F32]:
        k = min(k, len(self))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        # ef must be at least k for hnswlib to return k results.
        self._index.set_ef(max(self._ef_search, k))
        labels, distances = self._index.knn_query(query.reshape(1, -1), k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def __len__(self) -> int:
        return int(self._index.get_current_count())
