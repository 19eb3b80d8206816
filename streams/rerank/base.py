"""The reranker interface."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]
Scores = npt.NDArray[np.floating]  # [lists, candidates], -inf after each list's candidates


@dataclass(frozen=True)
class ListContext:
    """What a reranker may know of one request beyond relevance and embeddings: each candidate's
    categories and the user's category weights. Built only for rerankers whose
    :attr:`Reranker.needs_context` is set, since gathering it costs a Python loop per candidate."""

    categories: Sequence[Sequence[str]] = ()
    user_categories: Mapping[str, float] = field(default_factory=dict)


Contexts = Sequence[ListContext | None] | None


class Reranker(abc.ABC):
    """Selects ``k`` of ``N`` candidates from their relevance and their embeddings.

    Subclasses implement :meth:`select`; parameters (such as a trade-off lambda) are
    constructor arguments so one instance serves a whole policy. :meth:`select_many` serves a
    whole micro-batch; the default loops over :meth:`select`, and rerankers whose greedy steps
    vectorise across lists override it.
    """

    name: str = "reranker"
    #: Whether :meth:`select` reads a :class:`ListContext` (callers skip building one otherwise).
    needs_context: bool = False

    @abc.abstractmethod
    def select(
        self, relevance: FloatArray, embeddings: FloatArray, k: int, context: ListContext | None = None
    ) -> IndexArray:
        """Positions of the chosen candidates, best first; ``min(k, N)`` distinct positions.

        ``relevance`` has shape ``[N]``; ``embeddings`` has shape ``[N, d]`` with L2-normalised rows.
        """

    def select_many(self, relevance: Scores, embeddings: FloatArray, k: int, contexts: Contexts = None) -> IndexArray:
        """:meth:`select` for ``B`` lists at once: ``relevance`` ``[B, P]`` with ``-inf`` after each list's
        candidates (they are packed first), ``embeddings`` ``[B, P, d]``; ``[B, min(k, P)]`` positions,
        ``-1`` where a list has fewer than ``k`` candidates."""
        n_lists, width = relevance.shape
        out = np.full((n_lists, min(k, width)), -1, np.intp)
        counts = np.isfinite(relevance).sum(axis=1)
        for b in range(n_lists):
            n = int(counts[b])
            ctx = contexts[b] if contexts is not None else None
            picks = self.select(relevance[b, :n].astype(np.float32), embeddings[b, :n], k, ctx)
            out[b, : len(picks)] = picks
        return out

    def select_rows(
        self, relevance: Scores, vectors: FloatArray, rows: IndexArray, k: int, contexts: Contexts = None
    ) -> IndexArray:
        """:meth:`select_many` with each candidate's embedding ``vectors[rows[b, p]]``: rerankers that
        can tell which candidates they will not pick override it to gather fewer vectors."""
        return self.select_many(relevance, np.take(vectors, rows, axis=0), k, contexts)

    def rerank(
        self, candidates: Sequence[T], relevance: FloatArray, embeddings: FloatArray, k: int
    ) -> list[T]:
        """The chosen candidates themselves (ids or objects), best first."""
        if not (len(candidates) == len(relevance) == len(embeddings)):
            raise ValueError("candidates, relevance and embeddings must have the same length")
        return [candidates[i] for i in self.select(relevance, embeddings, k)]
