"""The recommender: events in, one diversified, partly exploratory top-K list per event out.

No Kafka in here. The streaming app hands each micro-batch of events to
:meth:`Recommender.process`; the evaluation harness and the benchmarks call the same method.

Per event: the user's multi-interest state is updated, candidates are gathered from several
sources (nearest items to each interest centroid, co-visitation, collaborative filtering,
trending, fresh items), scored by a listwise ranker learned from what users engaged with next,
reranked by the user's policy (MMR, DPP, calibration) and given a share of exploration slots
chosen by a bandit.

The lists of a batch are made together, with array operations over ``[events, candidates]``:
one matrix product for every interest centroid of the batch, one pass per candidate source
that de-duplicates every pool at once, one feature tensor scored by the ranker in one
product, and the rerankers' greedy steps run in lockstep over the batch's lists. Python loops
run per event only where the work is per event by nature (the user's state, the explore draw
seeded by the event, building the output objects).

What is exact per event and what per micro-batch: a user's state (interests, history) is
updated event by event, so each list reflects everything its user did up to that event.
The global models (popularity, co-visitation, MF, the ranker, the bandit) learn from
a micro-batch after its lists are made, so no list uses an event that came after it.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter

from streams.contracts import Event, Recommendation, RecommendedItem
from streams.explore import EXPLORE, Bandit, ThompsonSampling, explore_lists
from streams.feedback import FeedbackJoiner, Reward
from streams.interest import engagement_weight
from streams.interest.multi import MultiInterest, MultiInterestState, split_budget
from streams.learning import Lessons, SharedModels
from streams.policies import Policy, assign
from streams.ranking import LastPools, ListwiseRanker, TakeRates, candidate_features
from streams.ranking.features import FEATURES, PRIOR
from streams.rerank import ListContext
from streams.retrieval import Catalog
from streams.retrieval.covisit import CoScores, CoVisitation
from streams.retrieval.index import blocked_product, top_rows
from streams.retrieval.mf import OnlineMF
from streams.retrieval.ragged import first_occurrences, flatten

Rows = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
#: The ranker's lessons of a batch: features ``[L, P, F]``, their valid cells, the candidates' ids, the
#: position taken in each list and the batch event each list answers.
RankLessons = tuple[F32, npt.NDArray[np.bool_], npt.NDArray[np.str_] | None, list[int], list[int]]

# Candidate sources, in the order a duplicate keeps its first tag.
SIMILAR, COVISITED, COLLABORATIVE, TRENDING, FRESH = "similar", "co-visited", "collaborative", "trending", "fresh"
SOURCES = (SIMILAR, COVISITED, COLLABORATIVE, TRENDING, FRESH)
# Events x catalog rows that one pass's masks may take: a batch is cut into chunks below it, so a
# catalog of a million items does not ask for [events, items] arrays of gigabytes.
_CHUNK_CELLS = 8_000_000
# And at most this many events: a pass's [events, items] blocks then stay in cache (a batch of 500
# over MovieLens went 10-15 % faster in chunks of 128), and co-visitation sums them densely.
_CHUNK_EVENTS = 128
_ITEMS = TypeAdapter(list[RecommendedItem])


@dataclass(frozen=True)
class CandidateMix:
    """How many candidates each source contributes (before de-duplication)."""

    similar: int = 200
    covisited: int = 50
    collaborative: int = 50
    trending: int = 50
    fresh: int = 20
    explore_pool: int = 50


@dataclass(frozen=True)
class ListTrace:
    """How one list was made, for the metrics layer."""

    policy: str
    reranker: str
    pool: Counter[str]  # candidates by source, after de-duplication
    rerank_s: float
    #: The candidates themselves: catalog rows and their source (an index into :data:`SOURCES`), for
    #: the evaluation's pool recall (no copy: the arrays the ranker learns from).
    candidates: tuple[Rows, npt.NDArray[np.int8]] | None = None


@dataclass(frozen=True)
class BatchResult:
    """What :meth:`Recommender.process` made of one micro-batch; the caller publishes and stores it."""

    #: One list per event, in order.
    lists: list[Recommendation]
    #: The new state of each user the batch touched (written once per batch, serialized).
    states: dict[bytes, bytes]
    #: One trace per list, in order.
    traces: list[ListTrace]
    #: The rewards (clicks and expired impressions) the batch taught the shared models.
    rewards: list[Reward]
    #: Held interest updates the batch dropped, by why: ``timeout`` (the item got no vector in time) or
    #: ``bound`` (more were waiting for the user than :attr:`Recommender.max_pending`).
    dropped_updates: Counter[str] = field(default_factory=Counter)
    #: What the batch teaches the shared models (learned already when :attr:`Recommender.learn`).
    lessons: Lessons | None = None


def parse_mix(spec: str) -> CandidateMix:
    """``"similar=300,fresh=0"`` -> a :class:`CandidateMix` (sources not named keep their default).

    >>> parse_mix("similar=300,explore=10")
    CandidateMix(similar=300, covisited=50, collaborative=50, trending=50, fresh=20, explore_pool=10)
    """
    names = {
        "similar": "similar",
        "covisited": "covisited",
        "collaborative": "collaborative",
        "trending": "trending",
        "fresh": "fresh",
        "explore": "explore_pool",
    }
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, size = part.partition("=")
        if name.strip() not in names or not size.strip().isdigit():
            raise ValueError(f"bad candidate mix entry {part!r}; expected NAME=COUNT with NAME in {', '.join(names)}")
        sizes[names[name.strip()]] = int(size)
    return CandidateMix(**sizes)


@dataclass
class _Pending:
    """One event's list in the making."""

    event: Event
    state: MultiInterestState  # snapshot right after the event
    before: MultiInterestState  # snapshot right before it (rewards are learned from it)
    policy: Policy
    arm: str
    #: The list's candidates as the ranker saw them: rows, sources and relevance (set once made).
    pool: tuple[Rows, npt.NDArray[np.int8], F64] | None = None


@dataclass(frozen=True)
class _Similarities:
    """A batch's queries times every item (``scores`` ``[queries, n]``) and the item norms to divide by."""

    scores: F32
    norms: F32


@dataclass
class Pool:
    """A chunk's candidate pools, packed left: ``rows`` ``[B, P]`` (``-1`` padding) and their source
    (an index into :data:`SOURCES`)."""

    rows: Rows
    source: npt.NDArray[np.int8]
    #: ``[B, n]``: the rows each event's user has touched (never candidates, never explored).
    seen: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        self.valid = self.rows >= 0
        #: ``rows`` with the padding pointing at row 0, for gathers (mask the result with :attr:`valid`).
        self.safe: Rows = np.where(self.valid, self.rows, 0)


@dataclass
class Recommender:
    """Everything a worker learns and serves with; one instance per worker process."""

    catalog: Catalog
    interest: MultiInterest
    policies: dict[str, Policy]
    split: dict[str, float]
    salt: str = "streamrec"
    k: int = 10
    mix: CandidateMix = field(default_factory=CandidateMix)
    bandit: Bandit = field(default_factory=ThompsonSampling)
    ranker: ListwiseRanker = field(default_factory=lambda: ListwiseRanker(FEATURES, PRIOR))
    #: Each user's last candidates, which the ranker learns from at their next engagement.
    pools: LastPools = field(default_factory=LastPools)
    covisit: CoVisitation = field(default_factory=CoVisitation)
    mf: OnlineMF = field(default_factory=OnlineMF)
    take_rates: TakeRates = field(default_factory=TakeRates)
    feedback: FeedbackJoiner = field(default_factory=FeedbackJoiner)
    #: The most relevant candidates a list's reranker sees (0: the whole pool).
    rerank_pool: int = 0
    #: Interest updates a user's state holds for items not embedded yet (the oldest go first)...
    max_pending: int = 32
    #: ... and for how long, in event time, before one is dropped (its item never got a vector).
    pending_timeout_s: float = 3600.0
    #: Whether :meth:`process` teaches the shared models the batch itself (every worker does: a serving
    #: worker's own batches count at once, and its lessons also go to the learner); False leaves
    #: :attr:`BatchResult.lessons` to whoever learns them.
    learn: bool = True
    _dropped: Counter[str] = field(default_factory=Counter, init=False, repr=False)  # by the batch in progress

    def new_state(self) -> MultiInterestState:
        return self.interest.new_state()

    def policy_of(self, user_id: str) -> Policy:
        return self.policies[assign(user_id, self.split, self.salt)]

    # --- the streaming entry point ------------------------------------------------------
    def process(self, events: Sequence[tuple[bytes, Event]], store: Mapping[bytes, bytes]) -> BatchResult:
        """Fold a micro-batch of ``(user key, event)`` into the user states read from ``store``
        (never written: the new states come back in the result); one list per event, in order."""
        states: dict[bytes, MultiInterestState] = {}
        pending: list[_Pending] = []
        self._dropped: Counter[str] = Counter()
        for key, event in events:
            state = states.get(key) or self._load(store, key)
            before = state.snapshot()
            self._observe_user(state, event)
            states[key] = state
            policy = self.policy_of(event.user_id)
            pending.append(_Pending(event, state.snapshot(), before, policy, policy.name))
        lists: list[list[RecommendedItem]] = []
        traces: list[ListTrace] = []
        size = min(_CHUNK_EVENTS, max(1, _CHUNK_CELLS // max(len(self.catalog), 1)))
        for start in range(0, len(pending), size):
            chunk_lists, chunk_traces = self._recommend(pending[start : start + size])
            lists += chunk_lists
            traces += chunk_traces
        now = time.time()
        out = [
            Recommendation(
                user_id=p.event.user_id, event_id=p.event.event_id, generated_at=now, policy=p.policy.name,
                arm=p.arm, items=items,
            )
            for p, items in zip(pending, lists, strict=True)
        ]
        lessons, rewards = self._lessons(pending, out)
        if self.learn:
            self.shared().learn(lessons)
        return BatchResult(
            out, {key: state.to_bytes() for key, state in states.items()}, traces, rewards, self._dropped, lessons
        )

    def _load(self, store: Mapping[bytes, bytes], key: bytes) -> MultiInterestState:
        raw = store.get(key)
        return MultiInterestState.from_bytes(raw) if raw is not None else self.new_state()

    def _observe_user(self, state: MultiInterestState, event: Event) -> None:
        """Fold ``event`` into its user's state; an item without a vector yet enters the history at
        once and its interest update waits in the state until the vector is there."""
        self._fold_pending(state, event.ts)
        item = self.catalog.get(event.item_id)
        vec = self.catalog.vector(event.item_id)
        categories = item.categories if item is not None else ()
        weight = engagement_weight(event)
        if vec is None and weight > 0:
            state.pending.append((event.item_id, weight, event.ts))
            self._dropped["bound"] += max(0, len(state.pending) - self.max_pending)
            del state.pending[: -self.max_pending]
        self.interest.learn_one(state, event.item_id, vec, weight, event.ts, categories)

    def _fold_pending(self, state: MultiInterestState, now: float) -> None:
        """Apply, oldest first, the waiting interest updates whose item now has its vector; drop those
        older than :attr:`pending_timeout_s` (event time, so a replay folds the same)."""
        if not state.pending:
            return
        waiting = []
        for item_id, weight, ts in state.pending:
            vec = self.catalog.vector(item_id)
            item = self.catalog.get(item_id)
            if vec is not None and item is not None:
                self.interest.absorb(state, vec, weight, item.categories)
            elif now - ts <= self.pending_timeout_s:
                waiting.append((item_id, weight, ts))
            else:
                self._dropped["timeout"] += 1
        state.pending = waiting

    # --- users waiting for items' vectors, woken without an event of theirs --------------
    def held_items(self, state: bytes) -> list[str]:
        """The items whose vector a user's held interest updates wait for, from its serialized state."""
        return MultiInterestState.pending_items(state)

    def fold(self, keys: Iterable[bytes], store: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        """These users' states with the held interest updates whose item has its vector now folded in (as
        their next event would, at their latest event's time); no list is made."""
        self._dropped = Counter()
        out = {}
        for key in keys:
            if (raw := store.get(key)) is not None:
                state = MultiInterestState.from_bytes(raw)
                self._fold_pending(state, state.last_ts)
                out[key] = state.to_bytes()
        return out

    # --- serving ------------------------------------------------------------------------
    def _recommend(self, pending: Sequence[_Pending]) -> tuple[list[list[RecommendedItem]], list[ListTrace]]:
        """The lists of a chunk of events, made together."""
        if not pending:  # a batch whose every message went to the dead-letter topic
            return [], []
        if not len(self.catalog.listable_rows()):  # empty, or every item retired
            return [[] for _ in pending], [ListTrace(p.policy.name, p.policy.reranker.name, Counter(), 0.0)
                                           for p in pending]
        seen = [self.catalog.rows(p.state.history) for p in pending]
        recent = self._last([p.state for p in pending], seen, None, self.covisit.window)
        queries, product, similar = self._similar(pending)
        co = self.covisit.accumulate(recent, len(self.catalog))
        pool = self._pool(pending, seen, recent, similar, co)
        relevance = self._relevance(pending, pool, queries, product, co, recent)
        picks, rerank_s = self._rerank(pending, pool, relevance)
        # The chosen items of every list, flat in list order (``offsets`` cut them per list).
        chosen = picks >= 0
        events, slots = np.nonzero(chosen)
        positions = picks[events, slots]
        rows = pool.rows[events, positions]
        offsets = np.concatenate([[0], np.cumsum(chosen.sum(axis=1))]).tolist()
        ids, scores = self.catalog.ids(rows), relevance[events, positions].tolist()
        reasons = self._reasons(pending, events, rows, pool.source[events, positions])
        exploit = np.where(chosen, pool.rows[np.arange(len(pending))[:, None], np.maximum(picks, 0)], -1)
        explored = self._explore(pending, exploit, seen, pool.seen)
        lists, traces = [], []
        sizes = pool.valid.sum(axis=1).tolist()  # each pool is packed left
        for b, (p, n, mix) in enumerate(zip(pending, sizes, self._mixes(pool), strict=True)):
            p.pool = (pool.rows[b, :n], pool.source[b, :n], relevance[b, :n])
            start, end = offsets[b], offsets[b + 1]
            kept, extra = explored[b] or (end - start, [])
            items = [  # one pydantic-core call per list: faster than a model per item, or model_construct
                {"item_id": item_id, "score": score, "reason": reason}
                for item_id, score, reason in zip(
                    ids[start : start + kept], scores[start : start + kept], reasons[start : start + kept],
                    strict=True,
                )
            ]
            items += [{"item_id": a, "score": 0.0, "reason": EXPLORE} for a in extra]
            lists.append(_ITEMS.validate_python(items))
            traces.append(ListTrace(p.policy.name, p.policy.reranker.name, mix, rerank_s[b], p.pool[:2]))
        return lists, traces

    @staticmethod
    def _mixes(pool: Pool) -> list[Counter[str]]:
        """Each pool's candidates by source, for the traces (one count over the chunk)."""
        n = len(SOURCES)
        keys = (np.arange(len(pool.rows))[:, None] * n + pool.source)[pool.valid]
        counts = np.bincount(keys, minlength=len(pool.rows) * n).reshape(-1, n)
        return [Counter({SOURCES[i]: c for i, c in enumerate(row) if c}) for row in counts.tolist()]

    def _similar(
        self, pending: Sequence[_Pending]
    ) -> tuple[list[F32], _Similarities | None, list[list[tuple[Rows, int]]]]:
        """Each event's unit interest queries, the batch product of all of them with every item when
        search computes it anyway (exact search), and per event the ``(rows, budget)`` of each
        centroid's search."""
        queries, weights = zip(*self.interest.queries_many([p.state for p in pending]), strict=True)
        sizes = [len(q) for q in queries]
        similar: list[list[tuple[Rows, int]]] = [[] for _ in pending]
        if not sum(sizes):
            return list(queries), None, similar
        want = self.mix.similar + max(len(p.state.history) for p in pending)
        stacked = np.concatenate(queries)
        catalog, compact = self.catalog, self.catalog.compact
        product: _Similarities | None = None
        if catalog.index.exact and compact.active:
            # Exact search in the compact space: the same product on a fraction of the dimensions.
            scores = blocked_product(compact.project(stacked), compact.vectors[: len(catalog)])
            product = _Similarities(scores, np.ones(len(catalog), np.float32))
        elif (full := catalog.index.similarities(stacked)) is not None:
            product = _Similarities(full, np.maximum(catalog.norms(), np.float32(1e-12)))
        if product is not None:
            if len(catalog.listable_rows()) < len(catalog):  # retired or unembedded items take no slots
                product.scores[:, ~catalog.listable()[: product.scores.shape[1]]] = -np.inf
            ann_rows, _ = top_rows(product.scores, want)
        else:
            ann_rows, _ = catalog.index.search_many(stacked, want)
        offset = 0
        for b, (w, n_q) in enumerate(zip(weights, sizes, strict=True)):
            budgets = split_budget(w, self.mix.similar).tolist() if n_q else []
            similar[b] = [(ann_rows[offset + j], int(budget)) for j, budget in enumerate(budgets)]
            offset += n_q
        return list(queries), product, similar

    def _pool(
        self,
        pending: Sequence[_Pending],
        seen: Sequence[Rows],
        recent: Sequence[Rows],
        similar: Sequence[Sequence[tuple[Rows, int]]],
        co: CoScores,
    ) -> Pool:
        """Every event's candidates, tagged by source and de-duplicated (the first source wins; items
        the user touched never enter), one pass per source over the whole chunk."""
        n_events, mix, catalog = len(pending), self.mix, self.catalog
        events = np.arange(n_events)
        segments: list[tuple[Rows, npt.NDArray[np.int64], int]] = []
        for j in range(max(len(s) for s in similar)):  # one segment per centroid slot
            width = max((len(s[j][0]) for s in similar if len(s) > j), default=0)
            rows = np.full((n_events, width), -1, np.int64)
            limits = np.zeros(n_events, np.int64)
            for b, s in enumerate(similar):
                if len(s) > j:
                    rows[b, : len(s[j][0])], limits[b] = s[j][0], s[j][1]
            segments.append((rows, limits, 0))
        co_rows, _ = co.top(mix.covisited, recent)
        segments.append((co_rows, np.full(n_events, mix.covisited), 1))
        mf_rows, _ = self.mf.top_items([p.event.user_id for p in pending], mix.collaborative, exclude=seen)
        segments.append((mf_rows, np.full(n_events, mix.collaborative), 2))
        trending, _ = catalog.popular(mix.trending)
        segments.append((np.broadcast_to(trending, (n_events, len(trending))), np.full(n_events, mix.trending), 3))
        fresh = catalog.newest(mix.fresh)
        segments.append((np.broadcast_to(fresh, (n_events, len(fresh))), np.full(n_events, mix.fresh), 4))
        taken = np.zeros((n_events, len(catalog)), bool)  # in the user's history or already a candidate
        taken[flatten(seen)] = True
        seen_mask = taken.copy()
        taken[:, ~catalog.listable()] = True  # retired: no source may list them
        cells = taken.reshape(-1)  # a view: one flat gather and scatter per source
        kept_rows, kept_tags = [], []
        for rows, limits, tag in segments:
            at = events[:, None] * len(catalog) + np.where(rows >= 0, rows, 0)
            ok = (rows >= 0) & ~cells[at]
            accept = ok & (np.cumsum(ok, axis=1) <= limits[:, None])  # each source lists at most its limit
            cells[at[accept]] = True
            kept_rows.append(np.where(accept, rows, -1))
            kept_tags.append(np.full(rows.shape, tag, np.int8))
        rows, tags = np.concatenate(kept_rows, axis=1), np.concatenate(kept_tags, axis=1)
        valid = rows >= 0
        order = np.argsort(~valid, axis=1, kind="stable")  # pack each pool left, keeping source order
        width = int(np.count_nonzero(valid, axis=1).max())
        at = order[:, :width] + events[:, None] * rows.shape[1]  # flat gathers: cheaper than 2-d ones
        return Pool(rows.reshape(-1)[at], tags.reshape(-1)[at], seen_mask)

    def _cosine(self, queries: Sequence[F32], rows: Rows, similar: _Similarities | None = None) -> F32:
        """Per event ``b`` and row ``rows[b, p]``, the cosine to the nearest of ``queries[b]`` (0 for a
        cold user): ``[B, P]``; read from the batch's ``similar`` product when there is one."""
        n_events, width = rows.shape
        m = max((len(q) for q in queries), default=0)
        if m == 0:
            return np.zeros((n_events, width), np.float32)
        safe = np.where(rows >= 0, rows, 0)
        sizes = np.fromiter(map(len, queries), np.int64, n_events)
        slots = np.arange(m)
        mine = slots < sizes[:, None]  # [B, m]: the slots that hold one of the event's queries
        if similar is not None:
            # One gather for the batch: each event's query rows of the product, padded with row 0 then
            # masked, so each max runs over exactly that event's queries.
            first = np.cumsum(sizes) - sizes
            picked = similar.scores[np.where(mine, first[:, None] + slots, 0)[:, :, None], safe[:, None, :]]
            best = np.where(mine[:, :, None], picked, -np.inf).max(axis=1) / similar.norms[safe]
        else:
            # The space the batch product uses when serving (see _similar), so a lesson's cosine is the
            # feature its list was scored with.
            compact = self.catalog.compact if self.catalog.index.exact and self.catalog.compact.active else None
            stacked = np.concatenate(queries)  # projected together: a row's projection is its own
            padded = np.zeros((n_events, m, compact.dim if compact else self.catalog.dim), np.float32)
            padded[mine] = compact.project(stacked) if compact else stacked
            vecs = np.take(compact.vectors if compact else self.catalog.vectors, safe, axis=0)
            sims = np.einsum("bpd,bmd->bpm", vecs, padded)
            sims[np.broadcast_to(~mine[:, None, :], sims.shape)] = -np.inf
            best = sims.max(axis=2) / np.maximum(np.linalg.norm(vecs, axis=2), np.float32(1e-12))
        best[sizes == 0] = 0.0  # cold users
        out: F32 = best.astype(np.float32)
        return out

    def _last(
        self, states: Sequence[MultiInterestState], tails: Sequence[Rows], span: int | None, n: int
    ) -> list[Rows]:
        """Per state, the rows of its last ``n`` history items, read off ``tails[b]`` (the rows of its last
        ``span`` items, ``None``: all) unless an unknown id was skipped there or ``n`` reaches past it."""
        out = []
        for state, rows in zip(states, tails, strict=True):
            whole = len(state.history) if span is None else min(span, len(state.history))
            covered = len(rows) == whole and (span is None or n <= span)
            out.append(rows[-n:] if covered else self.catalog.rows(state.history[-n:]))
        return out

    def _features(
        self, states: Sequence[MultiInterestState], users: Sequence[str], ts: F64, rows: Rows,
        sources: npt.NDArray[np.int8], cosine: F32, covisit: F64, recent: Sequence[Rows],
    ) -> F32:
        """The ranker's feature tensor of ``rows`` ``[B, P]`` for each event's user: ``[B, P, F]``
        (``recent``: the rows of each user's last co-visitation window of items)."""
        safe = np.where(rows >= 0, rows, 0)
        popularity = self.catalog.popularities(safe)
        covisit_last, covisit_last3 = (  # beside ``covisit`` (the whole window): the user's last few items
            self.covisit.accumulate(self._last(states, recent, self.covisit.window, n), len(self.catalog)).at(rows)
            for n in (1, 3)
        )
        return candidate_features(
            rows, sources,
            cosine=cosine,
            category=self.catalog.category_affinity_many([s.category_mix() for s in states], safe),
            category_last3=self.catalog.category_affinity_many(
                [self.catalog.category_mix(s.history[-3:]) for s in states], safe
            ),
            popularity=popularity[..., 1],
            trending=popularity[..., 0],
            age_s=ts[:, None] - self.catalog.created_at()[safe],
            covisit=covisit,
            covisit_last=covisit_last,
            covisit_last3=covisit_last3,
            mf=self.mf.scores(users, rows),
            take_lift=self.take_rates.lift(rows),
            events=np.array([s.events for s in states], np.float64),
        )

    def _relevance(
        self, pending: Sequence[_Pending], pool: Pool, queries: Sequence[F32], product: _Similarities | None,
        co: CoScores, recent: Sequence[Rows],
    ) -> F64:
        """Each candidate's relevance (the ranker's score), ``-inf`` on the padding: ``[B, P]``."""
        features = self._features(
            [p.state for p in pending], [p.event.user_id for p in pending], np.array([p.event.ts for p in pending]),
            pool.rows, pool.source, self._cosine(queries, pool.rows, product), co.at(pool.rows), recent,
        )
        return np.where(pool.valid, self.ranker.score(features), -np.inf)

    def _rerank(
        self, pending: Sequence[_Pending], pool: Pool, relevance: F64
    ) -> tuple[npt.NDArray[np.intp], list[float]]:
        """Per event the chosen pool positions (``-1`` padding) and the seconds its reranker took
        (a group's time shared by its lists)."""
        n_events = len(pending)
        picks = np.full((n_events, self.k), -1, np.intp)
        seconds = [0.0] * n_events
        groups: dict[str, list[int]] = {}
        for b, p in enumerate(pending):
            groups.setdefault(p.policy.name, []).append(b)
        for members in groups.values():
            idx = np.array(members)
            reranker = pending[members[0]].policy.reranker
            rel = relevance[idx]
            positions = np.broadcast_to(np.arange(rel.shape[1]), rel.shape)
            if self.rerank_pool and rel.shape[1] > self.rerank_pool:
                # The reranker sees the most relevant candidates only, in pool order.
                keep = np.sort(np.argsort(-rel, axis=1, kind="stable")[:, : self.rerank_pool], axis=1)
                rel, positions = np.take_along_axis(rel, keep, axis=1), keep
            rows = np.take_along_axis(pool.safe[idx], positions, axis=1)
            contexts = None
            if reranker.needs_context:
                contexts = [
                    ListContext([self.catalog.items[r].categories for r in rows[i][np.isfinite(rel[i])]],
                                pending[b].state.category_mix())
                    for i, b in enumerate(members)
                ]
            started = time.perf_counter()
            chosen = reranker.select_rows(rel, self.catalog.compact.vectors, rows, self.k, contexts)
            elapsed = (time.perf_counter() - started) / len(members)
            width = min(chosen.shape[1], self.k)
            mapped = np.where(chosen[:, :width] >= 0,
                              np.take_along_axis(positions, np.maximum(chosen[:, :width], 0), axis=1), -1)
            picks[idx, :width] = mapped
            for b in members:
                seconds[b] = elapsed
        return picks, seconds

    def _reasons(
        self, pending: Sequence[_Pending], events: npt.NDArray[np.intp], rows: Rows, tags: npt.NDArray[np.int8]
    ) -> list[str]:
        """The source of each chosen item (``rows``, of list ``events``); ``similar to <title>`` names the
        item its user engaged with recently that is closest to it (one product for the chunk)."""
        out = [SOURCES[t] for t in tags.tolist()]
        similar = np.flatnonzero(tags == SOURCES.index(SIMILAR))
        if not len(similar):
            return out
        lists = np.unique(events[similar]).tolist()
        recent = [self.catalog.rows(pending[b].state.history[-10:]) for b in lists]
        recent = [r[self.catalog.embedded()[r]] for r in recent]
        padded = np.full((len(pending), max(map(len, recent))), -1, np.int64)
        for b, r in zip(lists, recent, strict=True):
            padded[b, : len(r)] = r
        mine = padded[events[similar]]  # [S, R]: each similar item's list's recent rows
        vectors = self.catalog.vectors
        sims = np.einsum("sd,srd->sr", vectors[rows[similar]], vectors[np.maximum(mine, 0)])
        sims[mine < 0] = -np.inf
        nearest = np.take_along_axis(mine, sims.argmax(axis=1)[:, None], axis=1)[:, 0]
        for i, row in zip(similar.tolist(), nearest.tolist(), strict=True):
            if row >= 0:  # a list with no recent embedded item keeps its plain tag
                out[i] = f"similar to {self.catalog.items[row].title}"
        return out

    def _explore(
        self, pending: Sequence[_Pending], exploit: Rows, seen: Sequence[Rows], unseen: npt.NDArray[np.bool_]
    ) -> list[tuple[int, list[str]] | None]:
        """Per list, how many of its exploit items (``exploit`` ``[B, k]``, ``-1`` padding) lead it and the
        explore items after them (``None``: no exploration). Each event draws from its own generator;
        the rest is done for the chunk at once."""
        listable = self.catalog.listable_rows()  # every row while none is retired: the same draws
        explorers = [b for b, p in enumerate(pending) if p.policy.explore_share > 0] if len(listable) else []
        out: list[tuple[int, list[str]] | None] = [None] * len(pending)
        if not explorers:
            return out
        rngs = [event_rng(pending[b].event.event_id) for b in explorers]
        # Draw with replacement and drop repeats: a full permutation of the catalog per list is slow.
        draws = [
            rng.integers(len(listable), size=2 * (self.mix.explore_pool + len(seen[b]) + self.k))
            for b, rng in zip(explorers, rngs, strict=True)
        ]
        lengths = [len(d) for d in draws]
        lists = np.asarray(explorers)
        owner = np.repeat(lists, lengths)  # each draw's list
        drawn = listable[np.concatenate(draws)]
        cells = owner * len(self.catalog) + drawn  # (list, row) in the chunk's [B, n] masks
        pool = first_occurrences(cells) & ~unseen.reshape(-1)[cells]
        pool &= _running_count(pool, lengths) <= self.mix.explore_pool
        # Neither are the list's exploit items explored again.
        pool[pool] = ~(drawn[pool][:, None] == exploit[owner[pool]]).any(axis=1)
        fresh = drawn[pool]
        cuts = np.cumsum(np.bincount(np.repeat(np.arange(len(lists)), lengths)[pool], minlength=len(lists)))
        ids = self.catalog.ids(fresh)
        spans = list(itertools.pairwise([0, *cuts.tolist()]))
        arms, keys = [ids[a:b] for a, b in spans], [fresh[a:b] for a, b in spans]
        contexts: Sequence[F32 | None] = (
            np.split(self.catalog.vectors[fresh], cuts[:-1]) if self.bandit.contextual else [None] * len(lists)
        )
        made = explore_lists(
            (exploit[lists] >= 0).sum(axis=1).tolist(), arms, [pending[b].policy.explore_share for b in explorers],
            self.k, self.bandit, contexts, rngs, keys,  # an arm's key is its catalog row
        )
        for b, list_made in zip(explorers, made, strict=True):
            out[b] = list_made
        return out

    # --- learning from the batch, after its lists are made --------------------------------
    def shared(self) -> SharedModels:
        """The models every list is made with (learned here, or swapped in from a learner's snapshot)."""
        return SharedModels(self.catalog, self.covisit, self.mf, self.ranker, self.bandit, self.take_rates)

    def use(self, models: SharedModels, popularity: F64) -> None:
        """Serve from ``models`` (loaded from a snapshot) and ``popularity`` from the next batch on."""
        self.covisit, self.mf, self.ranker, self.bandit = models.covisit, models.mf, models.ranker, models.bandit
        self.take_rates = models.take_rates
        self.catalog.load_popularity(popularity)

    def _lessons(self, pending: Sequence[_Pending], lists: Sequence[Recommendation]) -> tuple[Lessons, list[Reward]]:
        """What the batch teaches the shared models, and the rewards among it. The per-user parts are
        done here: the user's previous candidates (the ranker's lessons) and their shown lists (the
        bandit's rewards) stay with the worker that serves the user."""
        # The ranker's lessons first: they are scored with co-visitation and MF as they were when the
        # lists were made, before the batch's own pairs are counted (else the item taken would
        # carry its own engagement in its features).
        rank_x, rank_valid, rank_items, rank_taken, rank_event = self._rank_lessons(pending)
        latest_ts = 0.0
        rewards: list[tuple[int, Reward]] = []
        engagements: list[tuple[int, str, str, float, list[str]]] = []
        for b, (p, rec) in enumerate(zip(pending, lists, strict=True)):
            event = p.event
            latest_ts = max(latest_ts, event.ts)
            rewards += [(b, r) for r in self.feedback.on_engagement(event)]
            weight = engagement_weight(event)
            if weight > 0:
                engagements.append((b, event.user_id, event.item_id, weight, p.before.history[-self.covisit.window :]))
            self.feedback.record_impressions(event.user_id, event.event_id, rec.items, p.arm, p.policy.name, event.ts)
        rewards += [(len(pending) - 1, r) for r in self.feedback.expire(latest_ts)]
        lessons = Lessons.build(engagements, rank_x, rank_valid, rank_taken, rank_event, rewards, rank_items)
        return lessons, [r for _, r in rewards]

    def _no_rank_lessons(self) -> RankLessons:
        return np.zeros((0, 0, len(self.ranker.features)), np.float32), np.zeros((0, 0), bool), None, [], []

    def _rank_lessons(
        self, pending: Sequence[_Pending]
    ) -> RankLessons:
        """Each engagement with an item of the user's previous list's candidates is a lesson: that list's
        features, scored from the user's state before the engagement, and the position of the item taken.
        Then each event's candidates become its user's previous list (in order: a user's second event
        in a batch learns from the list of their first)."""
        lessons: list[tuple[int, Rows, npt.NDArray[np.int8], int]] = []
        cut = iter(self.pools.cut([p.pool for p in pending if p.pool is not None]))
        for b, p in enumerate(pending):
            event = p.event
            last = self.pools.get(event.user_id)
            if last is not None and engagement_weight(event) > 0 and event.item_id in self.catalog:
                taken = np.flatnonzero(last[0] == self.catalog.row(event.item_id))
                if len(taken):
                    lessons.append((b, *last, int(taken[0])))
            if p.pool is not None:
                self.pools.store(event.user_id, *next(cut))
        if not lessons:
            return self._no_rank_lessons()
        width = max(len(rows) for _, rows, _, _ in lessons)
        rows = np.full((len(lessons), width), -1, np.int64)
        sources = np.full((len(lessons), width), -1, np.int8)
        for i, (_, mine, tags, _) in enumerate(lessons):
            rows[i, : len(mine)], sources[i, : len(tags)] = mine, tags
        learners = [pending[b] for b, *_ in lessons]
        states = [p.before for p in learners]
        recent = [self.catalog.rows(s.history[-self.covisit.window :]) for s in states]
        queries = [q for q, _ in self.interest.queries_many(states)]
        features = self._features(
            states, [p.event.user_id for p in learners], np.array([p.event.ts for p in learners]), rows, sources,
            self._cosine(queries, rows), self.covisit.accumulate(recent, len(self.catalog)).at(rows), recent,
        )
        valid = rows >= 0
        ids = np.array(self.catalog.ids(rows[valid]), np.str_)
        items = np.full(rows.shape, "", ids.dtype)
        items[valid] = ids
        return features, valid, items, [taken for *_, taken in lessons], [b for b, *_ in lessons]


def _running_count(mask: npt.NDArray[np.bool_], lengths: Sequence[int]) -> npt.NDArray[np.int64]:
    """Per position, how many ``mask`` entries of its segment (consecutive, of ``lengths``) are at or
    before it.

    >>> _running_count(np.array([1, 1, 0, 1, 1], bool), [3, 2]).tolist()
    [1, 2, 2, 1, 2]
    """
    total = np.cumsum(mask)
    before = np.concatenate([[0], total[np.cumsum(lengths)[:-1] - 1]])
    counts: npt.NDArray[np.int64] = total - np.repeat(before, lengths)
    return counts


def event_rng(event_id: str) -> np.random.Generator:
    """A generator seeded by the event, so a replay of the same events draws the same numbers.

    >>> int(event_rng("ev-1").integers(1000)) == int(event_rng("ev-1").integers(1000))
    True
    """
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest()))
