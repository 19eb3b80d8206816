"""The recommender: interest state in, a diversified top-K list out. No Kafka in here.

The streaming app calls :meth:`Recommender.observe` and :meth:`Recommender.recommend`
for each event; the evaluation harness and the benchmarks call the same two methods.
"""

from __future__ import annotations

import numpy as np

from streams.contracts import Event, RecommendedItem
from streams.interest import DecayedMeanInterest, UserState, engagement_weight
from streams.rerank import MMR, Reranker, TopK
from streams.retrieval import Catalog, ExactIndex, HnswIndex, VectorIndex
from streams.settings import Settings


class Recommender:
    """Retrieve candidates for a user, score them, rerank them into ``k`` items.

    Warm users: nearest items to their interest direction, relevance = cosine.
    Cold users (no positive engagement yet): decayed most-popular, relevance = popularity
    relative to the top item. Items in the user's history are never shown again.
    """

    def __init__(
        self,
        catalog: Catalog,
        interest: DecayedMeanInterest,
        reranker: Reranker,
        k: int = 10,
        n_candidates: int = 200,
    ) -> None:
        self.catalog = catalog
        self.interest = interest
        self.reranker = reranker
        self.k = k
        self.n_candidates = n_candidates

    @property
    def policy(self) -> str:
        return self.reranker.name

    def new_state(self) -> UserState:
        return self.interest.new_state()

    def observe(self, state: UserState, event: Event) -> UserState:
        """Fold ``event`` into the user's state and the item's popularity."""
        weight = engagement_weight(event)
        self.catalog.record_engagement(event.item_id, weight)
        return self.interest.learn_one(state, event.item_id, self.catalog.vector(event.item_id), weight, event.ts)

    def recommend(self, state: UserState) -> list[RecommendedItem]:
        exclude = set(state.history)
        want = self.n_candidates + len(exclude)
        if state.is_cold:
            rows, pop = self.catalog.popular(want)
            top = float(pop[0]) if len(pop) and pop[0] > 0 else 1.0
            relevance = (pop / top).astype(np.float32)
            reason = "trending"
        else:
            rows, relevance = self.catalog.index.search(self.interest.query(state), want)
            reason = "similar"
        keep = np.fromiter((self.catalog.items[r].item_id not in exclude for r in rows), bool, len(rows))
        rows, relevance = rows[keep][: self.n_candidates], relevance[keep][: self.n_candidates]
        picks = self.reranker.select(relevance, self.catalog.vectors[rows], self.k)
        return [
            RecommendedItem(item_id=self.catalog.items[rows[p]].item_id, score=float(relevance[p]), reason=reason)
            for p in picks
        ]


def make_reranker(settings: Settings) -> Reranker:
    """The reranker a policy name stands for."""
    if settings.policy == "mmr":
        return MMR(settings.mmr_lambda)
    return TopK()


def make_index(settings: Settings, dim: int) -> VectorIndex:
    """Exact search is faster than HNSW up to tens of thousands of items (measured: 0.16 vs 0.8 ms
    for 9k x 384 on one core), and exact; HNSW pays off for large catalogs."""
    return HnswIndex(dim) if settings.index == "hnsw" else ExactIndex(dim)


def build_recommender(settings: Settings, catalog: Catalog) -> Recommender:
    interest = DecayedMeanInterest(catalog.dim, settings.interest_half_life, settings.history_size)
    return Recommender(catalog, interest, make_reranker(settings), settings.k, settings.candidates)
