"""Reference rankers run inside the same :class:`~streams.recommender.Recommender` shell as the policies.

A baseline replaces only the step that turns candidates into a list. Everything around it is the
production code path: ``process(events, store)`` in micro-batches, the same per-user state
(history, decayed interest), the global models (decayed popularity, co-visitation, matrix
factorisation) learning once per batch after its lists are made. So baselines and policies see
exactly the same information at every list, and differ only in how they rank.

* ``random``: uniform over the catalog (seeded by the event, so a rerun draws the same).
* ``popular``: decayed most-popular (the catalog's popularity, as the trending source).
* ``covisit``: item-kNN by co-visitation with the user's recent items.
* ``cosine``: nearest items to the user's decayed mean embedding, no diversification.
* ``funkmf``: Funk matrix factorisation (River's ``FunkMF`` updates, in numpy) learned online on the
  positives (with sampled negatives).

Every baseline skips items the user already touched (as the policies do) and fills up with the
most popular items when its own ranking runs short (cold users, unknown items), so every list
has ``k`` items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.build import make_interest
from streams.contracts import RecommendedItem
from streams.policies import Policy
from streams.recommender import ListTrace, RankLessons, Recommender, _Pending, event_rng
from streams.rerank import TopK
from streams.retrieval import Catalog
from streams.retrieval.mf import OnlineMF
from streams.settings import Settings

Rows = npt.NDArray[np.int64]
BASELINES: tuple[str, ...] = ("random", "popular", "covisit", "cosine", "funkmf")


@dataclass
class Baseline(Recommender):
    """A :class:`Recommender` whose list is one baseline's ranking (``kind`` in :data:`BASELINES`)."""

    kind: str = "popular"

    def _ranked(self, p: _Pending, want: int, query_rows: Rows | None) -> Sequence[int] | Rows:
        """Rows best first (may include touched items; the caller drops them)."""
        catalog = self.catalog
        if self.kind == "random":
            return event_rng(p.event.event_id).choice(len(catalog), want, replace=False)
        if self.kind == "covisit":
            rows, _ = self.covisit.neighbours(catalog.rows(p.state.history[-self.covisit.window :]), want, len(catalog))
            return rows
        if self.kind == "cosine":
            return query_rows if query_rows is not None and not p.state.is_cold else []
        if self.kind == "funkmf":
            rows, _ = self.mf.top_items([p.event.user_id], want, exclude=[catalog.rows(p.state.history)])
            mine: Rows = rows[0][rows[0] >= 0]
            return mine
        return []  # popular: the fill-up alone

    def _recommend(self, pending: Sequence[_Pending]) -> tuple[list[list[RecommendedItem]], list[ListTrace]]:
        catalog = self.catalog
        if not pending or len(catalog) == 0:
            return [[] for _ in pending], []
        want = min(len(catalog), self.k + max(len(p.state.history) for p in pending))
        popular, _ = catalog.popular(want)
        queries: Rows | None = None
        if self.kind == "cosine":  # one product for the whole batch, as the policies' retrieval
            queries, _ = catalog.index.search_many(np.stack([self.interest.query(p.state) for p in pending]), want)
        lists = []
        for j, p in enumerate(pending):
            seen = set(catalog.rows(p.state.history).tolist())
            ranked = self._ranked(p, want, None if queries is None else queries[j])
            picks: list[int] = []
            for row in (*(int(r) for r in ranked), *(int(r) for r in popular)):
                if row not in seen:
                    seen.add(row)
                    picks.append(row)
                    if len(picks) == self.k:
                        break
            lists.append(
                [RecommendedItem(item_id=catalog.items[r].item_id, score=float(self.k - rank), reason=self.kind)
                 for rank, r in enumerate(picks)]
            )
        return lists, []

    def _rank_lessons(self, pending: Sequence[_Pending]) -> RankLessons:
        """No ranker to teach: a baseline ranks without it."""
        return self._no_rank_lessons()


def make_baseline(kind: str, settings: Settings, catalog: Catalog) -> Baseline:
    """A baseline with the production settings' user state, list length and batch learning."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    return Baseline(
        catalog=catalog,
        interest=make_interest(settings, catalog.dim),
        policies={kind: Policy(kind, TopK())},
        split={kind: 1.0},
        k=settings.k,
        mf=OnlineMF(kind="funk") if kind == "funkmf" else OnlineMF(),
        kind=kind,
    )
