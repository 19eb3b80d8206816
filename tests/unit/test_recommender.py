"""The Kafka-free recommender: exclusion, cold start, relevance for a focused user."""

from __future__ import annotations

import numpy as np

from streams.contracts import Event
from streams.recommender import build_recommender
from streams.retrieval import Catalog, CatalogItem, ExactIndex, HnswIndex
from streams.settings import Settings


def clustered_catalog(index_kind: str = "exact") -> Catalog:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 32)).astype(np.float32)
    vecs = np.repeat(centres, 25, axis=0) + 0.3 * rng.normal(size=(100, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = ExactIndex(32) if index_kind == "exact" else HnswIndex(32)
    catalog = Catalog(32, index=index)
    catalog.upsert([CatalogItem(f"c{i // 25}-{i}", f"title {i}") for i in range(100)], vecs)
    return catalog


def click(item: str, n: int = 0) -> Event:
    return Event(event_id=f"e{n}", user_id="u", item_id=item, type="click", ts=float(n))


def test_cold_user_gets_popular_items() -> None:
    catalog = clustered_catalog()
    rec = build_recommender(Settings(k=3, policy="relevance"), catalog)
    other = rec.new_state()
    for n, item in enumerate(["c1-30", "c1-30", "c2-60", "c1-30", "c2-60", "c3-80"]):
        rec.observe(other, click(item, n))
    cold = rec.recommend(rec.new_state())
    assert [i.item_id for i in cold] == ["c1-30", "c2-60", "c3-80"]
    assert all(i.reason == "trending" for i in cold)


def test_warm_user_gets_own_cluster_without_engaged_items() -> None:
    for kind in ("exact", "hnsw"):
        catalog = clustered_catalog(kind)
        rec = build_recommender(Settings(k=10, policy="mmr", mmr_lambda=0.8), catalog)
        state = rec.new_state()
        engaged = ["c2-50", "c2-51", "c2-52"]
        for n, item in enumerate(engaged):
            state = rec.observe(state, click(item, n))
        items = rec.recommend(state)
        ids = [i.item_id for i in items]
        assert len(ids) == 10 == len(set(ids))
        assert not set(ids) & set(engaged)
        assert sum(i.startswith("c2-") for i in ids) >= 8, ids
        assert all(i.reason == "similar" for i in items)


def test_short_catalog_gives_short_list() -> None:
    catalog = Catalog(2)
    catalog.upsert([CatalogItem("a", "A"), CatalogItem("b", "B")], np.eye(2, dtype=np.float32))
    rec = build_recommender(Settings(k=10), catalog)
    state = rec.observe(rec.new_state(), click("a"))
    assert [i.item_id for i in rec.recommend(state)] == ["b"]


def test_unknown_item_events_still_enter_history() -> None:
    catalog = clustered_catalog()
    rec = build_recommender(Settings(k=5), catalog)
    state = rec.observe(rec.new_state(), click("not-in-catalog"))
    assert state.history == ["not-in-catalog"] and state.is_cold


def test_batch_processing_equals_one_by_one() -> None:
    """A micro-batch (repeated users, cold and warm) gives exactly the lists of one-at-a-time handling."""
    rng = np.random.default_rng(11)
    clusters = rng.integers(4, size=40)
    plan = [(f"u{rng.integers(4)}", f"c{c}-{c * 25 + rng.integers(25)}", str(rng.choice(["view", "click"])))
            for c in clusters]
    events = [(u.encode(), Event(event_id=f"e{n}", user_id=u, item_id=i, type=t, ts=float(n)))
              for n, (u, i, t) in enumerate(plan)]
    # A 2-star rating is no evidence of interest: this user stays cold and gets trending items.
    events.insert(9, (b"cold", Event(event_id="e-cold", user_id="cold", item_id="c0-3", type="rating", value=2, ts=9)))

    one_by_one_store: dict[bytes, bytes] = {}
    rec1 = build_recommender(Settings(k=5), clustered_catalog())
    singles = [rec1.process([pair], one_by_one_store)[0] for pair in events]

    batch_store: dict[bytes, bytes] = {}
    rec2 = build_recommender(Settings(k=5), clustered_catalog())
    batched = rec2.process(events[:17], batch_store) + rec2.process(events[17:], batch_store)

    assert [r.event_id for r in batched] == [e.event_id for _, e in events]
    assert [[i.item_id for i in r.items] for r in batched] == [[i.item_id for i in r.items] for r in singles]
    assert batch_store == one_by_one_store
    assert any(i.reason == "trending" for r in batched for i in r.items)
    assert any(i.reason == "similar" for r in batched for i in r.items)
