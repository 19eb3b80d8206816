"""Quality of one emitted list, cheap enough to compute for every list the worker publishes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streams.contracts import RecommendedItem

#: The ``reason`` of an item put in a list to explore rather than to exploit (see ``streams.explore``).
EXPLORE = "explore"


def intra_list_diversity(embeddings: npt.NDArray[np.float32]) -> float | None:
    """Mean pairwise cosine distance ``1 - cos`` of a list's L2-normalised item rows; None below 2 items.

    >>> intra_list_diversity(np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32))
    0.6666666666666667
    >>> intra_list_diversity(np.ones((1, 2), dtype=np.float32)) is None
    True
    """
    n = len(embeddings)
    if n < 2:
        return None
    e = embeddings.astype(np.float64, copy=False)
    gram = e @ e.T
    # sum over i != j of cos, without building the mask: total minus the diagonal
    mean_cos = (float(gram.sum()) - float(np.trace(gram))) / (n * (n - 1))
    return max(0.0, 1.0 - mean_cos)  # float32 rows are not exactly unit length


def exploration_share(items: Sequence[RecommendedItem]) -> float | None:
    """Fraction of a list's items that are there to explore; None for an empty list.

    >>> exploration_share([RecommendedItem(item_id="a", score=1, reason="similar"),
    ...                    RecommendedItem(item_id="b", score=0, reason="explore")])
    0.5
    """
    if not items:
        return None
    return sum(item.reason == EXPLORE for item in items) / len(items)

