"""Events for items not embedded yet: handled at once (history, popularity, co-visitation, a list), their
interest update held in the user's state, bounded, and folded in once the item's vector is there."""

from __future__ import annotations

import numpy as np

from streams.build import build_recommender
from streams.contracts import Event
from streams.interest.multi import MultiInterestState
from streams.recommender import Recommender
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from streams.testing import run_batch, unit_rows

DIM = 16
VECTORS = unit_rows(np.random.default_rng(5), 30, DIM)


def recommender(**settings: object) -> Recommender:
    catalog = Catalog(DIM, compact_dim=8)
    catalog.upsert([CatalogItem(f"i{n}", f"title {n}", ("old",), float(n)) for n in range(20)], VECTORS[:20])
    catalog.announce([CatalogItem(f"new{n}", f"new {n}", ("new",), 100.0 + n) for n in range(10)])
    return build_recommender(Settings(**{"k": 5, "policy": "dpp_explore", **settings}), catalog)  # type: ignore[arg-type]


def click(n: int, user: str, item: str, ts: float | None = None) -> tuple[bytes, Event]:
    event = Event(event_id=f"e{n}", user_id=user, item_id=item, type="click", ts=1000.0 + n if ts is None else ts)
    return user.encode(), event


def state(store: dict[bytes, bytes], user: str) -> MultiInterestState:
    return MultiInterestState.from_bytes(store[user.encode()])


def embed(rec: Recommender, item_id: str, vector: np.ndarray) -> None:
    rec.catalog.upsert([CatalogItem(item_id, item_id, ("new",), 100.0)], vector[None, :])


def test_an_event_on_an_item_without_a_vector_counts_at_once_and_its_interest_follows_the_vector() -> None:
    rec, store = recommender(), {}
    result = run_batch(rec, [click(0, "u", "i1"), click(1, "u", "new3"), click(2, "v", "i1"), click(3, "v", "new3")],
                       store)
    assert [len(lst.items) for lst in result.lists] == [5, 5, 5, 5]  # every event has its list
    listed = {item.item_id for lst in result.lists for item in lst.items}
    assert not any(i.startswith("new") for i in listed), "an item without a vector is never listed"
    u = state(store, "u")
    assert u.history == ["i1", "new3"] and u.events == 2 and [p[0] for p in u.pending] == ["new3"]
    assert u.n_centroids == 1, "only i1 moved the interests so far"
    row = rec.catalog.row("new3")
    assert rec.catalog.popularity()[row] > 0, "popularity learned it at once"
    assert rec.covisit.score(rec.catalog.rows(["i1"]), np.array([row]))[0] > 0, "co-visitation learned it at once"

    near_i2 = VECTORS[2] + 0.05 * VECTORS[25]
    near_i2 /= np.linalg.norm(near_i2)
    before = max(float(q @ near_i2) for q in rec.interest.queries(u)[0])
    embed(rec, "new3", near_i2)  # its vector arrives: the item nearest to i2
    run_batch(rec, [click(4, "u", "i5")], store)
    u = state(store, "u")
    assert u.pending == [] and u.history == ["i1", "new3", "i5"]
    after = max(float(q @ near_i2) for q in rec.interest.queries(u)[0])
    assert after > before + 0.2, ("the interests moved to the embedded item", before, after)
    # and it is listed now, for users who have not touched it
    lists = run_batch(rec, [click(5 + n, f"w{n}", "i2") for n in range(5)], store).lists
    assert "new3" in {item.item_id for lst in lists for item in lst.items}


def test_held_updates_are_bounded_per_user_and_expire_in_event_time() -> None:
    rec, store = recommender(unknown_item_timeout_s=100.0), {}
    rec.max_pending = 3
    result = run_batch(rec, [click(n, "u", f"new{n}") for n in range(5)], store)
    assert [p[0] for p in state(store, "u").pending] == ["new2", "new3", "new4"]  # the oldest went first
    assert result.dropped_updates == {"bound": 2}
    result = run_batch(rec, [click(10, "u", "i1", ts=1000.0 + 102.5)], store)  # new2 (ts 1002) waited over 100 s
    assert [p[0] for p in state(store, "u").pending] == ["new3", "new4"]
    assert result.dropped_updates == {"timeout": 1}


def test_a_state_without_held_updates_keeps_its_bytes_and_one_with_them_round_trips() -> None:
    rec, store = recommender(), {}
    run_batch(rec, [click(0, "u", "i1")], store)
    assert store[b"u"][0] == 2, "version 2, as before"
    run_batch(rec, [click(1, "u", "new1")], store)
    raw = store[b"u"]
    assert raw[0] == 3 and state(store, "u").to_bytes() == raw
    assert state(store, "u").pending == [("new1", 1.0, 1001.0)]


def test_fold_takes_in_the_held_updates_whose_vector_arrived_without_an_event() -> None:
    rec, store = recommender(), {}
    run_batch(rec, [click(0, "u", "new1"), click(1, "u", "new2"), click(2, "v", "i1")], store)
    assert rec.held_items(store[b"u"]) == ["new1", "new2"] and rec.held_items(store[b"v"]) == []
    assert state(store, "u").is_cold
    embed(rec, "new1", VECTORS[25])
    folded = rec.fold([b"u", b"nobody"], store)
    assert list(folded) == [b"u"], "a user without a state has nothing to fold"
    store.update(folded)
    u = state(store, "u")
    assert [p[0] for p in u.pending] == ["new2"] and rec.held_items(store[b"u"]) == ["new2"]
    assert not u.is_cold and u.events == 2 and u.history == ["new1", "new2"], "the interest only: no event"
    assert max(float(q @ VECTORS[25]) for q in rec.interest.queries(u)[0]) > 0.99
