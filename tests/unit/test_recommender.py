"""The Kafka-free recommender: candidates, policies, exploration and feedback on a toy catalog."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from streams.build import build_recommender
from streams.contracts import Event
from streams.explore import ThompsonSampling, explore_slots
from streams.recommender import Recommender
from streams.rerank.calibration import miscalibration
from streams.retrieval import Catalog, CatalogItem, ExactIndex, HnswIndex
from streams.settings import Settings
from streams.testing import run_lists

CLUSTERS = 4
PER_CLUSTER = 25


def clustered_catalog(index_kind: str = "exact") -> Catalog:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(CLUSTERS, 32)).astype(np.float32)
    vecs = np.repeat(centres, PER_CLUSTER, axis=0) + 0.3 * rng.normal(size=(CLUSTERS * PER_CLUSTER, 32)).astype(
        np.float32
    )
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    catalog = Catalog(32, index=ExactIndex(32) if index_kind == "exact" else HnswIndex(32))
    items = [
        CatalogItem(f"c{i // PER_CLUSTER}-{i}", f"title {i}", (f"genre{i // PER_CLUSTER}",), created_at=float(i))
        for i in range(CLUSTERS * PER_CLUSTER)
    ]
    catalog.upsert(items, vecs)
    return catalog


def recommender(**settings: object) -> Recommender:
    return build_recommender(Settings(**{"k": 10, "policy": "mmr", **settings}), clustered_catalog())  # type: ignore[arg-type]


def ev(n: int, user: str, item: str, kind: str = "click", value: float = 1.0) -> tuple[bytes, Event]:
    return user.encode(), Event(event_id=f"e{n}", user_id=user, item_id=item, type=kind, value=value, ts=1000.0 + n)


def item_of(cluster: int, i: int) -> str:
    return f"c{cluster}-{cluster * PER_CLUSTER + i}"


def test_cold_user_gets_trending_items() -> None:
    rec = recommender(k=3, policy="relevance")
    store: dict[bytes, bytes] = {}
    others = [item_of(1, 5), item_of(1, 5), item_of(2, 7), item_of(1, 5), item_of(2, 7), item_of(3, 9)]
    run_lists(rec, [ev(n, f"other{n}", item) for n, item in enumerate(others)], store)
    # A 2-star rating carries no interest: the user stays cold.
    [out] = run_lists(rec, [ev(99, "newbie", item_of(0, 0), "rating", 2.0)], store)
    assert [i.item_id for i in out.items] == [item_of(1, 5), item_of(2, 7), item_of(3, 9)]
    assert {i.reason for i in out.items} == {"trending"}


@pytest.mark.parametrize("index_kind", ["exact", "hnsw"])
def test_warm_user_gets_own_cluster_without_engaged_items(index_kind: str) -> None:
    rec = build_recommender(Settings(k=10, policy="mmr", mmr_lambda=0.8), clustered_catalog(index_kind))
    store: dict[bytes, bytes] = {}
    engaged = [item_of(2, i) for i in range(3)]
    outs = run_lists(rec, [ev(n, "u", item) for n, item in enumerate(engaged)], store)
    ids = [i.item_id for i in outs[-1].items]
    assert len(ids) == 10 == len(set(ids))
    assert not set(ids) & set(engaged)
    assert sum(i.startswith("c2-") for i in ids) >= 7, ids
    assert any(i.reason.startswith("similar to title ") for i in outs[-1].items)


def test_multi_interest_user_gets_both_interests() -> None:
    rec = recommender(policy="relevance", interests=3)
    store: dict[bytes, bytes] = {}
    plan = [item_of(0, i) for i in range(4)] + [item_of(3, i) for i in range(4)]
    outs = run_lists(rec, [ev(n, "u", item) for n, item in enumerate(plan)], store)
    clusters = {i.item_id.split("-")[0] for i in outs[-1].items}
    assert {"c0", "c3"} <= clusters


def test_no_look_ahead_and_exact_user_state() -> None:
    """A list never depends on later events of its batch; user states equal one-by-one handling."""
    rng = np.random.default_rng(11)
    events = [ev(n, f"u{rng.integers(4)}", item_of(int(rng.integers(4)), int(rng.integers(PER_CLUSTER))),
                 str(rng.choice(["view", "click"]))) for n in range(40)]
    events.insert(9, ev(90, "cold", item_of(0, 3), "rating", 2.0))

    short_store: dict[bytes, bytes] = {}
    short = run_lists(recommender(), events[:20], short_store)
    long_store: dict[bytes, bytes] = {}
    long = run_lists(recommender(), events, long_store)
    assert [r.model_dump(exclude={"generated_at"}) for r in long[:20]] == [
        r.model_dump(exclude={"generated_at"}) for r in short
    ]

    single_store: dict[bytes, bytes] = {}
    single = recommender()
    for pair in events:
        run_lists(single, [pair], single_store)
    assert long_store == single_store
    assert [r.event_id for r in long] == [e.event_id for _, e in events]


def test_a_batch_cut_into_chunks_makes_the_lists_it_makes_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long batch is made in chunks of events (for the cache); the lists and states are those of one pass."""
    rng = np.random.default_rng(5)
    events = [ev(n, f"u{rng.integers(30)}", item_of(int(rng.integers(4)), int(rng.integers(PER_CLUSTER))))
              for n in range(300)]
    warm: dict[bytes, bytes] = {}
    model = recommender(policy="dpp_explore")
    run_lists(model, events[:150], warm)
    outcomes = []
    for chunk in (1000, 7):
        monkeypatch.setattr("streams.recommender._CHUNK_EVENTS", chunk)
        store = dict(warm)
        lists = run_lists(copy.deepcopy(model), events[150:], store)
        outcomes.append((lists, store))
    (whole, whole_states), (chunked, chunked_states) = outcomes
    assert chunked_states == whole_states
    for one, other in zip(whole, chunked, strict=True):
        assert [(i.item_id, i.reason) for i in one.items] == [(i.item_id, i.reason) for i in other.items]
        # A query's product rounds by its slot in its block of the batch (see blocked_product): a last bit, of
        # the ranker's terms (about 1 in size), which a score near 0 made of them carries as it is.
        assert np.allclose([i.score for i in one.items], [i.score for i in other.items], rtol=1e-6, atol=1e-6)


def test_every_list_carries_policy_and_arm_and_the_split_is_stable() -> None:
    rec = recommender(ab_split="mmr=1,dpp_explore=1", ab_salt="exp-7")
    store: dict[bytes, bytes] = {}
    outs = run_lists(rec, [ev(n, f"user{n % 40}", item_of(n % 4, n % 25)) for n in range(120)], store)
    by_user: dict[str, set[str]] = {}
    for out in outs:
        assert out.policy == out.arm and out.policy in {"mmr", "dpp_explore"}
        by_user.setdefault(out.user_id, set()).add(out.policy)
    assert all(len(p) == 1 for p in by_user.values()), "a user's policy never changes"
    shares = sum(p == {"mmr"} for p in by_user.values()) / len(by_user)
    assert 0.2 < shares < 0.8


def test_explore_policy_fills_its_share_and_clicks_reward_the_bandit() -> None:
    rec = recommender(policy="dpp_explore", explore_share=0.3)
    assert isinstance(rec.bandit, ThompsonSampling)
    store: dict[bytes, bytes] = {}
    [first] = run_lists(rec, [ev(0, "u", item_of(0, 0))], store)
    explored = [i.item_id for i in first.items if i.reason == "explore"]
    assert len(explored) == explore_slots(0.3, 10) == 3
    assert len({i.item_id for i in first.items}) == 10
    before = rec.bandit.posterior(explored[0])
    run_lists(rec, [ev(1, "u", explored[0])], store)  # the user clicks what we explored
    after = rec.bandit.posterior(explored[0])
    assert after[0] > before[0], "a click on a shown item is a reward for its arm"


def test_calibrated_policy_follows_the_users_genre_mix() -> None:
    plan = [item_of(0, i) for i in range(6)] + [item_of(1, i) for i in range(2)]
    mixes = {}
    for policy in ("relevance", "calibrated"):
        rec = recommender(policy=policy, calibration_lambda=0.9)
        store: dict[bytes, bytes] = {}
        outs = run_lists(rec, [ev(n, "u", item) for n, item in enumerate(plan)], store)
        state = rec._load(store, b"u")
        genres = [rec.catalog.get(i.item_id).categories for i in outs[-1].items]  # type: ignore[union-attr]
        mixes[policy] = miscalibration(genres, state.category_mix())
    assert mixes["calibrated"] < mixes["relevance"]


def test_short_catalog_gives_short_list() -> None:
    catalog = Catalog(2)
    catalog.upsert([CatalogItem("a", "A"), CatalogItem("b", "B")], np.eye(2, dtype=np.float32))
    rec = build_recommender(Settings(k=10, policy="mmr"), catalog)
    [out] = run_lists(rec, [(b"u", Event(event_id="e", user_id="u", item_id="a", type="click", ts=1))], {})
    assert [i.item_id for i in out.items] == ["b"]


def test_empty_batch_and_empty_catalog() -> None:
    """A batch whose every message was dead-lettered is empty; a catalog with no items yields empty lists."""
    rec = recommender()
    result = rec.process([], {})
    assert result.lists == [] and result.traces == []
    empty = build_recommender(Settings(k=5), Catalog(32))
    result = empty.process([ev(0, "u", "not-yet-embedded")], {})
    [out] = result.lists
    assert out.items == [] and len(result.traces) == 1


def test_the_last_items_of_a_history_skip_unknown_ids_as_a_lookup_of_them_would() -> None:
    """The rows of a user's last n items are read off the rows of a longer tail; an id the catalog does not
    know (skipped there) must not shift them."""
    rec = recommender()
    known = [item_of(0, i) for i in range(6)]
    histories = [known, [*known[:4], "gone", known[4]], ["gone", *known[:2]], ["gone"], []]
    states = [rec.new_state() for _ in histories]
    for state, history in zip(states, histories, strict=True):
        state.history = list(history)
    for span in (None, 4, 2):  # 2: shorter than the last 3 asked for
        tails = [rec.catalog.rows(h if span is None else h[-span:]) for h in histories]
        for n in (1, 3):
            got = rec._last(states, tails, span, n)
            assert [r.tolist() for r in got] == [rec.catalog.rows(h[-n:]).tolist() for h in histories]
