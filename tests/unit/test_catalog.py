"""The catalog's compact vectors do not depend on how, or in which order, the catalog was loaded."""

from __future__ import annotations

import numpy as np

from streams.retrieval import Catalog, CatalogItem


def _catalog(order: np.ndarray, pieces: int, vectors: np.ndarray) -> Catalog:
    catalog = Catalog(48, compact_dim=16)
    for part in np.array_split(order, pieces):
        catalog.upsert([CatalogItem(f"i{j}", f"title {j}") for j in part.tolist()], vectors[part])
    return catalog


def test_compact_vectors_are_the_same_bits_whatever_the_load_order() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    at_once = _catalog(np.arange(300), 1, vectors)
    in_pieces = _catalog(rng.permutation(300), 7, vectors)  # as a worker reads the vectors topic
    a = at_once.compact.vectors[at_once.rows([f"i{j}" for j in range(300)])]
    b = in_pieces.compact.vectors[in_pieces.rows([f"i{j}" for j in range(300)])]
    assert a.shape == (300, 16) and np.array_equal(a, b)
    queries = vectors[:5] + 0.1
    projected = at_once.compact.project(queries)
    assert np.array_equal(projected, in_pieces.compact.project(queries))
    # a query's projection does not depend on the others projected with it (a list on its batch)
    assert all(np.array_equal(projected[i], at_once.compact.project(queries[i : i + 1])[0]) for i in range(5))
    # a projection keeps most of the inner products' structure
    full, compact = vectors @ vectors.T, a @ a.T
    assert np.corrcoef(full.ravel(), compact.ravel())[0, 1] > 0.3
