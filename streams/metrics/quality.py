"""Quality of one emitted list, cheap enough to compute for every list the worker publishes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streams.contracts import RecommendedItem

#: The ``reason`` of an item put in a list to explore rather than to exploit (see ``streams.explore``).
EXPLORE = "explore"

F64 = npt.NDArray[np.float64]


def intra_list_diversity(embeddings: npt.NDArray[np.float32]) -> float | None:
    """Mean pairwise cosine distance ``1 - cos`` of a list's L2-normalised item rows; None below 2 items.

    >>> intra_list_diversity(np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32))
    0.6666666666666667
    >>> intra_list_diversity(np.ones((1, 2), dtype=np.float32)) is None
    True
    """
    ild = float(intra_list_diversity_many(embeddings[None], np.array([len(embeddings)]))[0])
    return None if np.isnan(ild) else ild


def intra_list_diversity_many(embeddings: npt.NDArray[np.float32], counts: npt.NDArray[np.int64]) -> F64:
    """:func:`intra_list_diversity` of lists ``embeddings[b, :counts[b]]`` (``[B, K, d]``, padded), NaN
    below 2 items: the sum over pairs ``i != j`` of ``e_i . e_j`` is ``|sum e|^2 - sum |e|^2``, no Gram
    matrix needed.

    >>> e = np.array([[[1, 0], [0, 1], [1, 0]], [[1, 0], [1, 0], [9, 9]]], dtype=np.float32)
    >>> intra_list_diversity_many(e, np.array([3, 2])).round(4).tolist()
    [0.6667, 0.0]
    """
    n = np.asarray(counts, np.float64)
    e = np.where((np.arange(embeddings.shape[1]) < counts[:, None])[:, :, None], embeddings, 0.0).astype(np.float64)
    total = np.einsum("bd,bd->b", e.sum(axis=1), e.sum(axis=1))
    diagonal = np.einsum("bkd,bkd->b", e, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_cos = (total - diagonal) / (n * (n - 1))
    out: F64 = np.where(n >= 2, np.maximum(0.0, 1.0 - mean_cos), np.nan)  # float32 rows are not exactly unit
    return out


def exploration_share(items: Sequence[RecommendedItem]) -> float | None:
    """Fraction of a list's items that are there to explore; None for an empty list.

    >>> exploration_share([RecommendedItem(item_id="a", score=1, reason="similar"),
    ...                    RecommendedItem(item_id="b", score=0, reason="explore")])
    0.5
    """
    if not items:
        return None
    return sum(item.reason == EXPLORE for item in items) / len(items)

