"""The reranker interface."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]


class Reranker(abc.ABC):
    """Selects ``k`` of ``N`` candidates from their relevance and their embeddings.

    Subclasses implement :meth:`select`; parameters (such as a trade-off lambda) are
    constructor arguments so one instance serves a whole policy.
    """

    name: str = "reranker"

    @abc.abstractmethod
    def select(self, relevance: FloatArray, embeddings: FloatArray, k: int) -> IndexArray:
        """Positions of the chosen candidates, best first; ``min(k, N)`` distinct positions.

        ``relevance`` has shape ``[N]``; ``embeddings`` has shape ``[N, d]`` with L2-normalised rows.
        """

    def rerank(
        self, candidates: Sequence[T], relevance: FloatArray, embeddings: FloatArray, k: int
    ) -> list[T]:
        """The chosen candidates themselves (ids or objects), best first."""
        if not (len(candidates) == len(relevance) == len(embeddings)):
            raise ValueError("candidates, relevance and embeddings must have the same length")
        return [candidates[i] for i in self.select(relevance, embeddings, k)]
