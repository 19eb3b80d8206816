"""The items a worker can recommend: metadata, embeddings, popularity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.retrieval.index import ExactIndex, VectorIndex

F32 = npt.NDArray[np.float32]


class CompactVectors:
    """Unit item vectors in ``dim`` dimensions: the catalog's projected on its top right singular
    vectors (the rank-``dim`` subspace that keeps inner products best), for the rerankers'
    similarity, where gathering full 384-d rows per candidate costs more than the reranking.

    The basis is fitted when first needed and again when the catalog has doubled since (all rows
    re-projected); rows added in between are projected on the current basis. A fit reads the
    rows sorted by item id and a row's projection is computed on its own, so a worker that loaded
    its catalog in pieces, in any order, holds the same bits as one that loaded it at once. With
    ``dim`` at or above the vectors' dimension the rows are the vectors themselves.

    >>> cv = CompactVectors(3, 2)
    >>> v = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], np.float32)
    >>> cv.sync(v, np.array(["a", "b", "c"], dtype=object), np.arange(3))
    >>> (cv.vectors[:3] @ cv.vectors[2]).astype(float).round(3).tolist()
    [0.6, 0.8, 1.0]
    """

    def __init__(self, full_dim: int, dim: int) -> None:
        self.dim = min(dim, full_dim) if dim > 0 else full_dim
        self.full_dim = full_dim
        self._basis: F32 | None = None  # [dim, full_dim]
        self._fitted_on = 0
        self.vectors = np.zeros((0, self.dim), np.float32)

    @property
    def active(self) -> bool:
        """Whether the rows are a projection (``dim`` below the vectors' dimension)."""
        return self.dim < self.full_dim

    def project(self, vectors: F32) -> F32:
        """``vectors`` (full dimension) as unit rows in the compact space, each row on its own (an
        ``einsum`` loop, not a BLAS product whose rounding follows the batch's shape)."""
        if self._basis is None:
            return vectors
        projected = np.einsum("nd,kd->nk", vectors.astype(np.float32, copy=False), self._basis)
        out: F32 = projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def sync(self, all_vectors: F32, ids: npt.NDArray[np.object_], rows: npt.NDArray[np.int64]) -> None:
        """Bring ``rows`` (changed since the last sync) up to date; fit first if none yet or the catalog doubled."""
        n = len(all_vectors)
        if n > len(self.vectors):
            grown = np.zeros((max(n, 2 * len(self.vectors)), self.dim), np.float32)
            grown[: len(self.vectors)] = self.vectors
            self.vectors = grown
        if not self.active:
            self.vectors[rows] = all_vectors[rows]
            return
        if n and (self._basis is None or n >= 2 * self._fitted_on):
            order = np.argsort(ids, kind="stable")  # the same matrix whatever order the rows came in
            _, _, vt = np.linalg.svd(all_vectors[order].astype(np.float32), full_matrices=False)
            basis = np.zeros((self.dim, all_vectors.shape[1]), np.float32)
            basis[: min(self.dim, len(vt))] = vt[: self.dim]
            self._basis, self._fitted_on = basis, n
            rows = np.arange(n)
        if len(rows):
            self.vectors[rows] = self.project(all_vectors[rows])


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    title: str
    categories: tuple[str, ...] = ()
    created_at: float = 0.0
    available: bool = True  #: False: retired, in no list until upserted again available


class Catalog:
    """Items addressed by id and by a dense row number shared with the vector index.

    A retired item keeps its row (co-visitation and MF index by row, histories name it) and is only
    masked out of what can be listed (:meth:`listable_rows`); upserting it available brings it back.
    An item given to :meth:`announce` before its vector arrives gets a row too (so popularity, co-visitation
    and MF learn its events at once) but no vector (:meth:`vector` is ``None``), and is listed only
    once :meth:`upsert` brings the vector.

    Popularity is an exponentially decayed engagement count (half-life in engagements; a second, long-term
    one is kept beside it for the ranker), kept with a growing scale factor so one update touches one row,
    not the whole catalog.

    >>> c = Catalog(dim=2)
    >>> c.upsert([CatalogItem("a", "A"), CatalogItem("b", "B")], np.eye(2, dtype=np.float32))
    >>> c.record_engagement("b", 1.0)
    >>> len(c), c.row("b"), c.popular(1)[0].tolist()
    (2, 1, [1])
    """

    def __init__(
        self,
        dim: int,
        index: VectorIndex | None = None,
        popularity_half_life: float = 5000.0,
        compact_dim: int = 0,
        long_half_life: float = 50_000.0,
    ) -> None:
        self.dim = dim
        self.index: VectorIndex = index if index is not None else ExactIndex(dim)
        self.items: list[CatalogItem] = []
        self._rows: dict[str, int] = {}
        # Row-aligned copies of what the hot path reads per candidate, so it gathers with numpy
        # instead of looping in Python: item ids, and category codes padded with -1.
        self._ids = np.empty(0, dtype=object)
        self._categories: dict[str, int] = {}
        self._codes = np.full((0, 1), -1, dtype=np.int32)
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._pop = np.zeros((0, 2), dtype=np.float64)  # by row: popularity, the long-term count
        self._created = np.zeros(0, dtype=np.float64)
        self._pop_growth = 2.0 ** (1.0 / np.array([popularity_half_life, long_half_life]))
        self._pop_scale = np.ones(2)
        self._compact = CompactVectors(dim, compact_dim)
        self._unsynced: list[npt.NDArray[np.int64]] = []  # rows upserted since the compact vectors last looked
        self._newest: tuple[int, npt.NDArray[np.int64]] | None = None  # (n, rows) until the next upsert
        self._listable = np.zeros(0, dtype=bool)  # available (not retired) and embedded
        self._available = np.zeros(0, dtype=bool)
        self._embedded = np.zeros(0, dtype=bool)
        self._listable_rows: npt.NDArray[np.int64] | None = None  # until the mask changes

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def get(self, item_id: str) -> CatalogItem | None:
        row = self._rows.get(item_id)
        return None if row is None else self.items[row]

    def row(self, item_id: str) -> int:
        return self._rows[item_id]

    def ids(self, rows: npt.NDArray[np.int64]) -> list[str]:
        """The item ids of ``rows``, in order."""
        ids: list[str] = self._ids[rows].tolist()
        return ids

    def category_affinity(self, mix: Mapping[str, float], rows: npt.NDArray[np.int64]) -> F32:
        """Per row, the sum of ``mix`` over the item's categories (the share of the user's mix on it).

        >>> c = Catalog(dim=1)
        >>> c.upsert([CatalogItem("a", "A", ("drama",)), CatalogItem("b", "B", ("comedy", "drama"))], np.ones((2, 1)))
        >>> c.category_affinity({"drama": 0.75, "comedy": 0.25}, np.array([1, 0])).tolist()
        [1.0, 0.75]
        """
        out: F32 = self.category_affinity_many([mix], rows[None, :])[0]
        return out

    def category_mix(self, item_ids: Sequence[str]) -> dict[str, float]:
        """The categories of these items as a mix summing to 1 (each item's categories count once;
        unknown items none).

        >>> c = Catalog(dim=1)
        >>> c.upsert([CatalogItem("a", "A", ("drama",)), CatalogItem("b", "B", ("comedy", "drama"))], np.ones((2, 1)))
        >>> c.category_mix(["a", "b", "zz"]), c.category_mix([])
        ({'drama': 0.6666666666666666, 'comedy': 0.3333333333333333}, {})
        """
        counts = Counter(name for i in item_ids if (item := self.get(i)) is not None for name in item.categories)
        total = sum(counts.values())
        return {name: n / total for name, n in counts.items()}

    @property
    def compact(self) -> CompactVectors:
        """The compact vectors, brought up to date with every upsert so far (fitted lazily, so a
        catalog loaded in many upserts fits once, when first served from)."""
        if self._unsynced:
            rows = np.unique(np.concatenate(self._unsynced))
            self._unsynced = []
            n = len(self.items)
            self._compact.sync(self.vectors[:n], self._ids[:n], rows)
        return self._compact

    def category_weights(self, mixes: Sequence[Mapping[str, float]]) -> F32:
        """Per mix, its weight of every category code ``c`` in column ``c + 1`` (column 0, the padding
        code ``-1``'s, stays 0): ``[B, C + 1]``."""
        weights = np.zeros((len(mixes), len(self._categories) + 1), np.float32)
        for b, mix in enumerate(mixes):
            for name, share in mix.items():
                code = self._categories.get(name)
                if code is not None:
                    weights[b, code + 1] = share
        return weights

    def category_affinity_many(self, mixes: Sequence[Mapping[str, float]], rows: npt.NDArray[np.int64]) -> F32:
        """:meth:`category_affinity` of ``rows[b]`` ``[B, P]`` under ``mixes[b]``: ``[B, P]``.

        >>> c = Catalog(dim=1)
        >>> c.upsert([CatalogItem("a", "A", ("drama",)), CatalogItem("b", "B", ("comedy", "drama"))], np.ones((2, 1)))
        >>> c.category_affinity_many([{"drama": 0.75, "comedy": 0.25}, {}], np.array([[1, 0], [0, 1]])).tolist()
        [[1.0, 0.75], [0.0, 0.0]]
        """
        weights = self.category_weights(mixes)
        # [B, P, W] positions in the flat weights (np.take: far cheaper than fancy indexing); padding reads column 0
        at = np.take(self._codes, rows, axis=0) + (np.arange(len(mixes)) * weights.shape[1] + 1)[:, None, None]
        out: F32 = np.take(weights, at).sum(axis=2, dtype=np.float32)
        return out

    def rows(self, item_ids: list[str]) -> npt.NDArray[np.int64]:
        """Rows of the ids known to the catalog (unknown ids are skipped).

        >>> c = Catalog(dim=1)
        >>> c.upsert([CatalogItem("a", "A"), CatalogItem("b", "B")], np.ones((2, 1)))
        >>> c.rows(["b", "a"]).tolist(), c.rows(["b", "zz", "a"]).tolist(), c.rows([]).dtype.name
        ([1, 0], [1, 0], 'int64')
        """
        try:  # usually every id is known: no per-id test
            return np.fromiter(map(self._rows.__getitem__, item_ids), np.int64, len(item_ids))
        except KeyError:
            return np.array([row for row in map(self._rows.get, item_ids) if row is not None], np.int64)

    def vector(self, item_id: str) -> F32 | None:
        """The item's vector; ``None`` when unknown or announced but not embedded yet."""
        row = self._rows.get(item_id)
        return None if row is None or not self._embedded[row] else self.vectors[row]

    def announce(self, items: list[CatalogItem]) -> None:
        """Give these items a row before their vectors arrive (items already known are left as they are).

        >>> c = Catalog(dim=1)
        >>> c.announce([CatalogItem("a", "A")])
        >>> "a" in c, c.vector("a"), c.listable_rows().tolist(), c.embedded_count
        (True, None, [], 0)
        """
        new = list({item.item_id: item for item in items if item.item_id not in self._rows}.values())
        if new:
            self.upsert(new, np.zeros((len(new), self.dim), np.float32), embedded=False)

    def upsert(self, items: list[CatalogItem], vectors: F32, embedded: bool = True) -> None:
        """Add new items or replace changed ones (same id keeps its row)."""
        if len(items) != len(vectors):
            raise ValueError("one vector per item")
        rows = np.empty(len(items), dtype=np.int64)
        width = max([len(item.categories) for item in items] + [self._codes.shape[1]])
        for i, item in enumerate(items):
            row = self._rows.get(item.item_id)
            if row is None:
                row = len(self.items)
                self._rows[item.item_id] = row
                self.items.append(item)
            else:
                self.items[row] = item
            rows[i] = row
        if len(self.items) > len(self.vectors):
            cap = max(len(self.items), 2 * len(self.vectors), 64)
            vectors_grown = np.zeros((cap, self.dim), dtype=np.float32)
            vectors_grown[: len(self.vectors)] = self.vectors
            self.vectors = vectors_grown
            self._norms = np.concatenate([self._norms, np.zeros(cap - len(self._norms), np.float32)])
            self._pop = np.concatenate([self._pop, np.zeros((cap - len(self._pop), 2))])
            self._created = np.concatenate([self._created, np.zeros(cap - len(self._created))])
            self._ids = np.concatenate([self._ids, np.empty(cap - len(self._ids), dtype=object)])
            for name in ("_listable", "_available", "_embedded"):
                mask = getattr(self, name)
                setattr(self, name, np.concatenate([mask, np.zeros(cap - len(mask), bool)]))
        if width > self._codes.shape[1] or len(self._codes) < len(self.vectors):
            codes = np.full((len(self.vectors), width), -1, dtype=np.int32)
            codes[: len(self._codes), : self._codes.shape[1]] = self._codes
            self._codes = codes
        for item, at in zip(items, rows.tolist(), strict=True):
            self._ids[at] = item.item_id
            self._codes[at] = -1
            for j, name in enumerate(item.categories):
                self._codes[at, j] = self._categories.setdefault(name, len(self._categories))
        self.vectors[rows] = vectors
        self._norms[rows] = np.linalg.norm(self.vectors[rows], axis=1)
        self._created[rows] = [item.created_at for item in items]
        self.index.upsert(rows, vectors.astype(np.float32, copy=False))
        self._unsynced.append(rows)
        self._embedded[rows] = embedded
        self._set_available(rows, np.array([item.available for item in items], bool))

    def retire(self, item_ids: Sequence[str]) -> None:
        """Take these items out of every list from now on (unknown ids are skipped); their rows stay.

        >>> c = Catalog(dim=1)
        >>> c.upsert([CatalogItem("a", "A"), CatalogItem("b", "B")], np.ones((2, 1)))
        >>> c.retire(["a", "zz"])
        >>> c.listable_rows().tolist(), c.newest(5).tolist(), c.retired
        ([1], [1], 1)
        """
        rows = self.rows(list(item_ids))
        self._set_available(rows, np.zeros(len(rows), bool))

    def restore(self, item_ids: Sequence[str]) -> None:
        """Undo :meth:`retire`: these items may be listed again once they have a vector."""
        rows = self.rows(list(item_ids))
        self._set_available(rows, np.ones(len(rows), bool))

    def _set_available(self, rows: npt.NDArray[np.int64], available: npt.NDArray[np.bool_]) -> None:
        self._available[rows] = available
        self._listable[rows] = available & self._embedded[rows]
        self._listable_rows = None
        self._newest = None

    def listable(self) -> npt.NDArray[np.bool_]:
        """Per row, whether the item may be listed (embedded and not retired)."""
        return self._listable[: len(self.items)]

    def embedded(self) -> npt.NDArray[np.bool_]:
        """Per row, whether the item's vector has arrived."""
        return self._embedded[: len(self.items)]

    @property
    def embedded_count(self) -> int:
        """How many items have their vector."""
        return int(self.embedded().sum())

    def listable_rows(self) -> npt.NDArray[np.int64]:
        """The rows that may be listed, ascending; kept until an item is upserted or retired."""
        if self._listable_rows is None:
            self._listable_rows = np.flatnonzero(self.listable()).astype(np.int64)
        return self._listable_rows

    @property
    def retired(self) -> int:
        """How many items are retired."""
        return len(self.items) - int(self._available[: len(self.items)].sum())

    def record_engagement(self, item_id: str, weight: float) -> None:
        row = self._rows.get(item_id)
        if row is None or weight <= 0:
            return
        self._pop_scale *= self._pop_growth
        if self._pop_scale.max() > 1e100:  # renormalise long before float64 overflows
            self._pop /= self._pop_scale
            self._pop_scale = np.ones(2)
        self._pop[row] += weight * self._pop_scale

    def load_popularity(self, values: npt.NDArray[np.float64]) -> None:
        """Take :meth:`popularities` values by row (rows beyond ``values`` start at 0), as from a snapshot;
        ``[n]`` values (a snapshot of a version before the long-term count) give :meth:`popularity` alone."""
        values = values.reshape(len(values), -1)
        n = min(len(values), len(self._pop))
        self._pop = np.zeros_like(self._pop)
        self._pop[:n, : values.shape[1]] = values[:n, :2]
        self._pop_scale = np.ones(2)

    def lookup(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """The row of each id, ``-1`` for an id the catalog does not know."""
        return np.fromiter((self._rows.get(i, -1) for i in item_ids), np.int64, len(item_ids))

    def popularity(self) -> npt.NDArray[np.float64]:
        """Decayed engagement count of every item, by row (halving every ``popularity_half_life`` engagements:
        what is engaged with now, as the trending source ranks)."""
        return self.popularities()[:, 0]

    def popularities(self, rows: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float64]:
        """``[n, 2]``: by row, :meth:`popularity` and the long-term count (halving every ``long_half_life``
        engagements: what has been engaged with all along); ``[..., 2]`` of ``rows`` only, when given.

        >>> c = Catalog(dim=1, popularity_half_life=1.0, long_half_life=1e9)
        >>> c.upsert([CatalogItem("a", "a"), CatalogItem("b", "b")], np.ones((2, 1)))
        >>> for item in ["a", "a", "b"]:
        ...     c.record_engagement(item, 1.0)
        >>> c.popularities().round(2).tolist()
        [[0.75, 2.0], [1.0, 1.0]]
        """
        counts = self._pop[: len(self.items)] if rows is None else self._pop[rows]  # gathered before dividing
        out: npt.NDArray[np.float64] = counts / self._pop_scale
        return out

    def norms(self) -> F32:
        """The L2 norm of every item's vector, by row."""
        return self._norms[: len(self.items)]

    def created_at(self) -> npt.NDArray[np.float64]:
        """Creation time of every item, by row."""
        return self._created[: len(self.items)]

    def newest(self, n: int) -> npt.NDArray[np.int64]:
        """The ``n`` most recently created listable rows, newest first (ties by row); kept until the catalog changes.

        >>> c = Catalog(dim=1)
        >>> items = [CatalogItem(i, i, created_at=t) for i, t in [("a", 1.0), ("b", 3.0), ("c", 3.0)]]
        >>> c.upsert(items, np.ones((3, 1)))
        >>> c.newest(2).tolist()
        [1, 2]
        """
        if self._newest is None or self._newest[0] != n:
            rows = self.listable_rows()
            self._newest = (n, rows[top_rows_by(self.created_at()[rows], n)])
        return self._newest[1]

    def popular(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The ``n`` most popular listable rows and their popularity, best first (ties by row)."""
        rows = self.listable_rows()
        pop = self.popularity()
        order = rows[top_rows_by(pop[rows], n)]
        return order, pop[order]


def top_rows_by(values: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.int64]:
    """The rows of the ``n`` largest ``values``, largest first, ties by row: a partition to the
    ``n``-th value and a sort of what is above it, not a sort of the whole catalog.

    >>> top_rows_by(np.array([0.0, 2.0, 1.0, 2.0, 1.0]), 3).tolist()
    [1, 3, 2]
    """
    n = min(n, len(values))
    if n <= 0:
        return np.zeros(0, np.int64)
    cut = np.partition(values, len(values) - n)[len(values) - n]  # the n-th largest value
    above = np.flatnonzero(values > cut)
    ties = np.flatnonzero(values == cut)[: n - len(above)]  # the lowest rows of the tied value
    rows = np.concatenate([above, ties])
    return rows[np.lexsort((rows, -values[rows]))].astype(np.int64)
