"""Retiring items: a tombstone or ``available: false`` takes an item out of every list made after the
batch that saw it, histories keep it, sending it again brings it back; a malformed tombstone is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.app.batch import Record
from streams.app.catalog import CatalogLoader
from streams.app.dead_letters import DeadLetters
from streams.app.items import ItemsHandler
from streams.build import build_recommender
from streams.contracts import EmbeddedItem, Event, Item, b64_vector, encode
from streams.interest.multi import MultiInterestState
from streams.metrics import Metrics
from streams.recommender import Recommender
from streams.retrieval import Catalog, CatalogItem, ExactIndex, HnswIndex
from streams.settings import Settings
from streams.testing import run_batch, unit_rows

N_ITEMS = 40


def small_catalog(index: str) -> Catalog:
    vectors = unit_rows(np.random.default_rng(1), N_ITEMS, 16)
    vectors[3] = vectors[4] * 0.9 + vectors[5] * 0.1  # i3 is the nearest item to i4: every policy lists it
    vectors[3] /= np.linalg.norm(vectors[3])
    catalog = Catalog(16, index=ExactIndex(16) if index == "exact" else HnswIndex(16), compact_dim=8)
    catalog.upsert([CatalogItem(f"i{n}", f"title {n}", (f"g{n % 3}",), float(n)) for n in range(N_ITEMS)], vectors)
    return catalog


def recommender(index: str = "exact", policy: str = "dpp_explore") -> Recommender:
    # k = a quarter of the catalog and half of it explored: an item left in the catalog is listed often
    return build_recommender(Settings(k=10, policy=policy, explore_share=0.5), small_catalog(index))  # type: ignore[arg-type]


def events(start: int, n: int, items: list[str], users: str = "u") -> list[tuple[bytes, Event]]:
    out = []
    for i in range(start, start + n):
        user = f"{users}{i % 7}"
        event = Event(event_id=f"e{i}", user_id=user, item_id=items[i % len(items)], type="click", ts=1000.0 + i)
        out.append((user.encode(), event))
    return out


def listed(rec: Recommender, batch: list[tuple[bytes, Event]], store: dict[bytes, bytes]) -> set[str]:
    return {item.item_id for lst in run_batch(rec, batch, store).lists for item in lst.items}


@pytest.mark.parametrize("index", ["exact", "hnsw"])
@pytest.mark.parametrize("policy", ["dpp_explore", "relevance", "calibrated"])
def test_a_retired_item_is_in_no_list_after_its_batch_and_comes_back_when_sent_again(index: str, policy: str) -> None:
    rec = recommender(index, policy)
    store: dict[bytes, bytes] = {}
    listed(rec, events(0, 60, ["i3", "i4", "i5"], users="a"), store)  # i3: trending, co-visited, learned by MF
    # the same events of users new each time (a user's own history is never listed)
    assert "i3" in listed(rec, events(60, 100, ["i4", "i5"], users="b"), store)
    rec.catalog.retire(["i3"])
    after = listed(rec, events(160, 200, ["i4", "i5", "i3"], users="c"), store)
    assert "i3" not in after and len(after) >= 10  # full lists, without it
    # histories keep it: events on a retired item still count
    assert all("i3" in MultiInterestState.from_bytes(store[f"c{u}".encode()]).history for u in range(7))
    rec.catalog.upsert([CatalogItem("i3", "title 3", ("g0",), 3.0)], rec.catalog.vectors[[3]])
    assert "i3" in listed(rec, events(360, 100, ["i4", "i5"], users="d"), store)


def test_lists_are_unchanged_while_nothing_is_retired() -> None:
    a, b = recommender(), recommender()
    b.catalog.retire(["i3"])
    b.catalog.upsert([CatalogItem("i3", "title 3", ("g0",), 3.0)], b.catalog.vectors[[3]])
    batch = events(0, 40, ["i1", "i2", "i3"])
    assert [x.items for x in run_batch(a, batch, {}).lists] == [x.items for x in run_batch(b, batch, {}).lists]


def test_a_fully_retired_catalog_gives_empty_lists() -> None:
    rec = recommender()
    rec.catalog.retire([f"i{n}" for n in range(N_ITEMS)])
    assert all(lst.items == [] for lst in run_batch(rec, events(0, 5, ["i1"]), {}).lists)


class OnesEncoder:
    async def encode(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), np.float32)

    async def close(self) -> None:
        return None


async def test_the_items_agent_passes_tombstones_on_and_dead_letters_malformed_ones() -> None:
    handler = ItemsHandler(lambda: OnesEncoder(), DeadLetters("dlq", Metrics()), "vectors")  # type: ignore[arg-type,return-value]
    gone = Item(item_id="i2", title="Two", created_at=0, available=False).model_dump_json().encode()
    batch = [Record("items", 0, 0, b"i1", None, 0.0), Record("items", 0, 1, b"i2", gone, 0.0)]
    batch += [Record("items", 0, 2 + n, key, None, 0.0) for n, key in enumerate([None, b"", b"\xff", b"x" * 257])]
    out = await handler(batch)
    assert [(m.topic, m.key, m.value) for m in out.messages[:1]] == [("vectors", b"i1", None)]
    dead = [json.loads(m.value or b"") for m in out.messages if m.topic == "dlq"]
    assert [(d["offset"], d["reason"]) for d in dead] == [(2, "schema"), (3, "schema"), (4, "schema"), (5, "schema")]
    assert all("tombstone" in d["detail"] for d in dead)
    [embedded] = [m for m in out.messages if m.topic == "vectors" and m.value is not None]
    assert EmbeddedItem.model_validate_json(embedded.value or b"").item.available is False


def vectors_record(item_id: str, available: bool = True) -> tuple[bytes, bytes]:
    item = Item(item_id=item_id, title=item_id, created_at=0, available=available)
    return item_id.encode(), encode(EmbeddedItem(item=item, vector_b64=b64_vector(np.ones(4, np.float32))))


def test_the_catalog_loader_applies_retirements_in_order() -> None:
    catalog = Catalog(4)
    loader = CatalogLoader(Settings(), catalog)
    loader.load([vectors_record("a"), vectors_record("b"), vectors_record("c", available=False)])
    assert catalog.ids(catalog.listable_rows()) == ["a", "b"]
    loader.load([vectors_record("a"), (b"a", None), (b"b", None), vectors_record("b"), vectors_record("c")])
    assert catalog.ids(catalog.listable_rows()) == ["b", "c"] and len(catalog) == 3 and catalog.retired == 1


def test_retired_items_leave_trending_and_fresh() -> None:
    catalog = small_catalog("exact")
    for item in ["i39", "i39", "i38"]:
        catalog.record_engagement(item, 1.0)
    catalog.retire(["i39"])
    assert catalog.popular(1)[0].tolist() == [38] and catalog.newest(2).tolist() == [38, 37]
