"""The ablation: the ranked policy again without one candidate source, or without one group of the
ranker's features, to see what each contributes (``relevance`` minus it, in NDCG@10 and pool recall)."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from streams.ranking import ListwiseRanker
from streams.ranking.features import FEATURES, PRIOR, SOURCE_NAMES
from streams.recommender import Recommender

#: The policy ablated: ranking alone, no reranker in the way.
POLICY = "relevance"
#: Candidate sources by their :class:`~streams.recommender.CandidateMix` field.
SOURCE_FIELDS = {"similar": "similar", "co-visited": "covisited", "collaborative": "collaborative",
                 "trending": "trending", "fresh": "fresh"}
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "content": ("cosine", "category", "category_last3"),
    "popularity": ("popularity", "popularity_share", "trending", "trending_share",
                   "popularity_share_x_events"),
    "age": ("age",),
    "co-visitation": ("covisit", "covisit_share", "covisited", "covisit_last", "covisit_last_share",
                      "covisit_last3", "covisit_last3_share"),
    "mf": ("mf",),
    "take-rate": ("take_lift",),
    "source": tuple(f"from_{name}" for name in SOURCE_NAMES),
}
PREFIX = f"{POLICY} without "


def ablation_names() -> list[str]:
    """One system per source and per feature group.

    >>> ablation_names()[0], ablation_names()[-1]
    ('relevance without source similar', 'relevance without features source')
    """
    return [f"{PREFIX}source {s}" for s in SOURCE_FIELDS] + [f"{PREFIX}features {g}" for g in FEATURE_GROUPS]


class MaskedRanker(ListwiseRanker):
    """The listwise ranker blind to some features: their columns read 0 when it scores and learns, so
    their weights never move and never count."""

    def __init__(self, drop: tuple[str, ...]) -> None:
        super().__init__(FEATURES, PRIOR)
        self.mask = np.array([name not in drop for name in FEATURES], np.float32)

    def score(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return super().score(X * self.mask)

    def learn_many(self, X: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], taken: npt.NDArray[np.intp]) -> None:
        super().learn_many(X * self.mask, valid, taken)


def ablate(name: str, system: Recommender) -> Recommender:
    """``system`` (built for :data:`POLICY`) without what ablation ``name`` removes."""
    kind, _, what = name.removeprefix(PREFIX).partition(" ")
    if kind == "source" and what in SOURCE_FIELDS:
        system.mix = dataclasses.replace(system.mix, **{SOURCE_FIELDS[what]: 0})
    elif kind == "features" and what in FEATURE_GROUPS:
        system.ranker = MaskedRanker(FEATURE_GROUPS[what])
    else:
        raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ablation_names())}")
    return system
