"""The MovieLens catalog with its vectors, embedded once in-process and cached under ``cache_dir``.

The benches measure serving, not embedding: reruns load the vectors from the cache (keyed by a
hash of the item texts, so a changed catalog or text format embeds again).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from encoders import LocalEncoder
from streams.demo.movielens import MovieLens, load_movielens


@dataclass(frozen=True)
class EmbeddedCatalog:
    data: MovieLens
    vectors: npt.NDArray[np.float32]  # one unit row per item, in ``data.items`` order


def embedded_movielens(cache_dir: Path, limit: int | None = None) -> EmbeddedCatalog:
    """MovieLens (``limit`` ratings, whole catalog) and its item vectors, from the cache when there."""
    data = load_movielens(limit)
    texts = [item.embedding_text() for item in data.items]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / "bench" / f"movielens-vectors-{digest}.npy"
    if path.is_file():
        return EmbeddedCatalog(data, np.load(path))
    vectors = asyncio.run(LocalEncoder(batch_size=128).encode(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npy")
    np.save(tmp, vectors)
    tmp.rename(path)  # whole or nothing: an interrupted run embeds again
    return EmbeddedCatalog(data, vectors)
