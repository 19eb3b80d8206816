"""The models every list is made with and the whole stream teaches: :class:`SharedModels`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.explore import Bandit
from streams.learning.lessons import Lessons
from streams.ranking import ListwiseRanker, TakeRates
from streams.retrieval import Catalog, CatalogItem
from streams.retrieval.covisit import CoVisitation
from streams.retrieval.mf import OnlineMF

Arrays = dict[str, npt.NDArray[np.generic]]

log = logging.getLogger(__name__)


@dataclass
class SharedModels:
    """Popularity (kept in the catalog), co-visitation, MF, the ranker, the bandit and the take rates.

    :meth:`learn` folds a batch's :class:`Lessons` in, by item id against this process's catalog (an
    item it does not know yet is left out of co-visitation and MF, as a serving worker leaves out an
    event it cannot use). :meth:`state` and :meth:`load_state` turn the models into named arrays and back,
    rows named by item id, so a worker whose catalog numbers the items otherwise loads them too.
    """

    catalog: Catalog
    covisit: CoVisitation
    mf: OnlineMF
    ranker: ListwiseRanker
    bandit: Bandit
    take_rates: TakeRates

    def learn(self, lessons: Lessons) -> None:
        """Fold ``lessons`` in, in the order one process learning a batch always has: the ranker (its
        features were taken before the batch) and its take rates, popularity, co-visitation, MF, the bandit."""
        catalog = self.catalog
        if len(lessons.rank_x) and lessons.rank_x.shape[-1] != len(self.ranker.features):
            # A worker of another version (during a rolling upgrade) scored its lists with other features:
            # its ranker lessons cannot teach this ranker; the rest of what it saw still counts.
            log.warning("ranker lessons of %d features skipped (this ranker has %d)", lessons.rank_x.shape[-1],
                        len(self.ranker.features))
        else:
            self.ranker.learn_many(lessons.rank_x, lessons.rank_valid, lessons.rank_taken)
        ranked = lessons.rank_items
        self.take_rates.learn(catalog.lookup(ranked.ravel().tolist()).reshape(ranked.shape), lessons.rank_taken)
        items, weights = lessons.items.tolist(), lessons.weights
        for item, weight in zip(items, weights.tolist(), strict=True):
            catalog.record_engagement(item, weight)
        known = [i for i, item in enumerate(items) if item in catalog]
        recent = lessons.recent_lists()
        rows = catalog.rows([items[i] for i in known])
        self.covisit.update_many([catalog.rows(recent[i]) for i in known], rows, weights[known])
        self.mf.learn_many([str(lessons.users[i]) for i in known], rows)
        arms = lessons.reward_items.tolist()
        learnt = [i for i, arm in enumerate(arms) if arm in catalog]
        if learnt:
            ids = [arms[i] for i in learnt]
            context = catalog.vectors[catalog.rows(ids)] if self.bandit.contextual else None
            self.bandit.learn_many(ids, lessons.reward_values[learnt].tolist(), context)

    def state(self) -> Arrays:
        """Every model as named arrays; ``items`` names the rows (this catalog's ids, in row order)."""
        n = len(self.catalog)
        out: Arrays = {"items": np.array(self.catalog.ids(np.arange(n)), np.str_) if n else np.zeros(0, "<U1")}
        popularity = self.catalog.popularities()
        out["popularity"], out["popularity_long"] = popularity[:, 0].copy(), popularity[:, 1].copy()
        out.update(prefixed("covisit", self.covisit.state(n)))
        out.update(prefixed("mf", self.mf.state(n)))
        out.update(prefixed("ranker", self.ranker.state()))
        out.update(prefixed("take", self.take_rates.state(n)))
        out["bandit"] = np.frombuffer(self.bandit.to_bytes(), np.uint8)
        return out

    def announce(self, items: npt.NDArray[np.generic]) -> None:
        """Give a state's ``items`` rows in its order, before the catalog loads (an empty catalog then numbers
        them as the state does, and the state loads as it is); the catalog fills them in as they arrive."""
        self.catalog.announce([CatalogItem(item, item) for item in np.asarray(items).tolist()])

    def remap(self, items: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.int64] | None, int]:
        """This catalog's row of each of a state's ``items`` (``None``: the same rows), and its size now.
        Reads the catalog: hold its lock."""
        ids, n = np.asarray(items).tolist(), len(self.catalog)
        return (None if self.catalog.ids(np.arange(min(n, len(ids)))) == ids else self.catalog.lookup(ids)), n

    def load_state(
        self, state: Mapping[str, npt.NDArray[np.generic]],
        remap: tuple[npt.NDArray[np.int64] | None, int] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Load ``state`` into these models (fresh ones, not serving yet) and return the popularities by this
        catalog's rows (``[n, 2]``; ``[n]`` from a snapshot without the long-term count), for
        :meth:`Recommender.use` to swap in with them. ``remap`` is :meth:`remap` of the state's items (taken
        here when not given: the catalog must not change meanwhile)."""
        rows, n = remap or self.remap(state["items"])
        self.covisit.load_state(unprefixed("covisit", state), rows, n)
        self.mf.load_state(unprefixed("mf", state), rows, n)
        self.ranker.load_state(unprefixed("ranker", state))
        self.take_rates.load_state(unprefixed("take", state), rows, n)
        self.bandit = type(self.bandit).from_bytes(np.asarray(state["bandit"], np.uint8).tobytes())
        values = np.asarray(state["popularity"], np.float64)
        if "popularity_long" in state:  # not in a snapshot of a version before it
            values = np.stack([values, np.asarray(state["popularity_long"], np.float64)], axis=1)
        if rows is None:
            return values
        popularity = np.zeros((n, *values.shape[1:]), np.float64)
        popularity[rows[rows >= 0]] = values[rows >= 0]
        return popularity


def prefixed(prefix: str, arrays: Mapping[str, npt.NDArray[np.generic]]) -> Arrays:
    return {f"{prefix}.{name}": value for name, value in arrays.items()}


def unprefixed(prefix: str, arrays: Mapping[str, npt.NDArray[np.generic]]) -> Arrays:
    start = f"{prefix}."
    return {name[len(start) :]: value for name, value in arrays.items() if name.startswith(start)}
