"""Candidate retrieval: the item catalog, its vector index and popularity."""

from streams.retrieval.catalog import Catalog, CatalogItem
from streams.retrieval.index import ExactIndex, HnswIndex, VectorIndex

__all__ = ["Catalog", "CatalogItem", "ExactIndex", "HnswIndex", "VectorIndex"]
