"""The listwise ranker and its lessons: does it learn which candidates users take next?"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st

from streams.build import build_recommender
from streams.contracts import Event
from streams.ranking import FEATURES, LastPools, ListwiseRanker, candidate_features
from streams.ranking.features import PRIOR, SOURCE_NAMES
from streams.ranking.pools import top_in_order
from streams.recommender import SOURCES, Recommender
from streams.retrieval import Catalog, CatalogItem
from streams.retrieval.covisit import CoVisitation
from streams.settings import Settings
from streams.testing import unit_rows


def make_recommender(n_items: int) -> Recommender:
    catalog = Catalog(16)
    items = [CatalogItem(f"i{i}", f"title {i}", (f"g{i % 4}",), created_at=float(i)) for i in range(n_items)]
    catalog.upsert(items, unit_rows(np.random.default_rng(0), n_items, 16))
    mix = "similar=10,covisited=5,collaborative=5,trending=5,fresh=0"  # pools far smaller than the catalog
    return build_recommender(Settings(k=10, policy="relevance", candidates=mix), catalog)


def _lists(rng: np.random.Generator, n: int, width: int = 30) -> npt.NDArray[np.float32]:
    """``n`` lists of ``width`` candidates with random raw signals, as features."""
    rows = np.tile(np.arange(width), (n, 1))
    sources = rng.integers(0, 5, (n, width)).astype(np.int8)
    return candidate_features(
        rows, sources,
        cosine=rng.uniform(-0.2, 0.9, (n, width)).astype(np.float32),
        category=rng.random((n, width)).astype(np.float32),
        category_last3=rng.random((n, width)).astype(np.float32),
        popularity=rng.lognormal(1.0, 1.5, (n, width)),
        trending=rng.lognormal(0.0, 1.5, (n, width)),
        age_s=rng.uniform(0, 1e8, (n, width)),
        covisit=rng.exponential(1.0, (n, width)) * (rng.random((n, width)) < 0.3),
        covisit_last=rng.exponential(1.0, (n, width)) * (rng.random((n, width)) < 0.1),
        covisit_last3=rng.exponential(1.0, (n, width)) * (rng.random((n, width)) < 0.2),
        mf=rng.normal(0, 1, (n, width)).astype(np.float32),
        take_lift=rng.normal(0, 0.5, (n, width)),
        events=rng.integers(1, 2000, n).astype(np.float64),
    )


F64 = npt.NDArray[np.float64]


def _taken(rng: np.random.Generator, X: npt.NDArray[np.float32], truth: F64) -> npt.NDArray[np.intp]:
    """Each list's taken candidate, drawn from the softmax of the true utility ``X @ truth``."""
    u = X.astype(np.float64) @ truth
    p = np.exp(u - u.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.array([rng.choice(X.shape[1], p=line) for line in p], np.intp)


def _mrr(scores: npt.NDArray[np.floating], taken: npt.NDArray[np.intp]) -> float:
    rank = (scores > scores[np.arange(len(taken)), taken][:, None]).sum(axis=1) + 1
    return float((1.0 / rank).mean())


def test_ranker_learns_what_users_take_from_the_lists_they_were_offered() -> None:
    rng = np.random.default_rng(5)
    truth = np.zeros(len(FEATURES))
    truth[FEATURES.index("category")] = 3.0
    truth[FEATURES.index("covisit_last")] = 2.0
    truth[FEATURES.index("popularity_share")] = -1.5  # users here avoid the most popular, against the prior
    ranker = ListwiseRanker(FEATURES, PRIOR, lr=0.1)
    for _ in range(60):  # 60 batches of 50 lessons
        X = _lists(rng, 50)
        ranker.learn_many(X, np.ones(X.shape[:2], bool), _taken(rng, X, truth))
    X = _lists(rng, 2000)
    taken = _taken(rng, X, truth)
    learned, prior = _mrr(ranker.score(X), taken), _mrr(ListwiseRanker(FEATURES, PRIOR).score(X), taken)
    oracle = _mrr(X @ truth, taken)
    assert learned > 0.9 * oracle, (learned, oracle)
    assert learned > prior + 0.1, (learned, prior)
    assert ranker.lessons == 3000
    assert ranker.weights["category"] > 1.0 and ranker.weights["popularity_share"] < 0


def test_the_users_event_count_scales_the_popularity_share() -> None:
    """A listwise softmax ignores per-list constants: the user's event count only counts through candidates."""
    n, width = 3, 8
    grid = np.tile(np.arange(float(width)), (n, 1))
    zeros = np.zeros((n, width))
    X = candidate_features(
        np.tile(np.arange(width), (n, 1)), np.zeros((n, width), np.int8),
        cosine=zeros.astype(np.float32), category=zeros.astype(np.float32), category_last3=zeros.astype(np.float32),
        popularity=grid, trending=zeros, age_s=zeros, covisit=zeros, covisit_last=zeros, covisit_last3=zeros,
        mf=zeros.astype(np.float32), take_lift=zeros, events=np.array([1000.0, 0.0, 1.0]),
    )
    by_events = X[..., FEATURES.index("popularity_share_x_events")]
    share = np.arange(width) / (width - 1)
    assert np.allclose(by_events[0], share) and not by_events[1].any()  # 1,000 events read 1, none 0
    assert np.allclose(by_events[2], share * np.log(2.0) / np.log(1001.0))


def test_padding_candidates_take_no_probability() -> None:
    """A list shorter than the batch's widest is padded: the padding must not move the weights."""
    rng = np.random.default_rng(1)
    X = _lists(rng, 4, width=6)
    valid = np.ones((4, 6), bool)
    valid[:, 4:] = False
    taken = np.zeros(4, np.intp)
    padded, short = ListwiseRanker(FEATURES, PRIOR), ListwiseRanker(FEATURES, PRIOR)
    padded.learn_many(np.where(valid[..., None], X, 99.0).astype(np.float32), valid, taken)
    short.learn_many(X[:, :4], valid[:, :4], taken)
    assert np.allclose(padded.w, short.w)


def test_recency_weighs_the_latest_item_most() -> None:
    plain, recent = CoVisitation(), CoVisitation(recency=0.5)
    for cv in (plain, recent):
        cv.update(np.array([0]), 2)  # 2 came with 0, 3 with 1, once each
        cv.update(np.array([1]), 3)
    history = np.array([0, 1])  # 1 is the user's latest
    # (counts decay a little with every update: round them)
    assert plain.score(history, np.array([2, 3])).round(4).tolist() == [1.0, 1.0]
    assert recent.score(history, np.array([2, 3])).round(4).tolist() == [0.5, 1.0]
    again = np.array([1, 0, 1])  # an item seen twice counts once, at its latest position
    assert recent.score(again, np.array([2, 3])).round(4).tolist() == [0.5, 1.0]


def _event(user: str, item: str, i: int, value: float = 5.0) -> Event:
    return Event(event_id=f"{user}-{i}", user_id=user, item_id=item, type="rating", value=value, ts=1000.0 + i)


def test_an_engagement_with_a_candidate_of_the_previous_list_is_a_lesson() -> None:
    rec = make_recommender(n_items=200)
    store: dict[bytes, bytes] = {}
    first = rec.process([(b"u", _event("u", "i0", 0))], store)
    store.update(first.states)
    offered = rec.pools.get("u")
    assert offered is not None and len(offered[0]) > 0
    outside = next(i for i in rec.catalog.ids(np.arange(200)) if rec.catalog.row(i) not in offered[0] and i != "i0")
    before = rec.ranker.w.copy()
    second = rec.process([(b"u", _event("u", outside, 1))], store)  # not offered: nothing to learn
    store.update(second.states)
    assert rec.ranker.lessons == 0 and np.array_equal(rec.ranker.w, before)
    offered = rec.pools.get("u")
    assert offered is not None
    candidate = rec.catalog.ids(offered[0][-1:])[0]
    rec.process([(b"u", _event("u", candidate, 2))], store)
    assert rec.ranker.lessons == 1 and not np.array_equal(rec.ranker.w, before)
    low = make_recommender(n_items=200)  # a rating of 3 or less is no engagement: no lesson
    low.process([(b"u", _event("u", "i0", 0))], {})
    pool = low.pools.get("u")
    assert pool is not None
    low.process([(b"u", _event("u", low.catalog.ids(pool[0][:1])[0], 1, value=2.0))], {})
    assert low.ranker.lessons == 0


def test_last_pools_stay_bounded() -> None:
    pools = LastPools(capacity=3, width=5)
    for u in range(10):
        pools.put(str(u), np.arange(20), np.zeros(20, np.int8), np.arange(20.0))
    assert len(pools) == 3 and pools.get("0") is None
    rows, _ = pools.get("9") or (None, None)
    assert rows is not None and rows.tolist() == [15, 16, 17, 18, 19]


def test_the_source_features_follow_the_recommenders_sources() -> None:
    assert SOURCE_NAMES == SOURCES


@given(
    st.integers(1, 5).flatmap(
        lambda b: st.integers(2, 30).flatmap(
            lambda m: st.tuples(
                st.lists(st.lists(st.sampled_from([-np.inf, 0.0, 0.5, 1.0, 2.0]), min_size=m, max_size=m),
                         min_size=b, max_size=b),
                st.integers(1, m - 1),
            )
        )
    )
)
def test_top_in_order_keeps_what_a_stable_sort_keeps(case: tuple[list[list[float]], int]) -> None:
    """The pools' cut by a partition: the same positions as a whole stable sort, ties to the earlier."""
    values, n = np.array(case[0]), case[1]
    expected = np.sort(np.argsort(-values, axis=1, kind="stable")[:, :n], axis=1)
    assert top_in_order(values, n).tolist() == expected.tolist()
