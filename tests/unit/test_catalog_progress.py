"""What waits for an embedding: the items topic against the vectors topic, as the status page, the
readiness signal and the metrics report it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from streams.app.catalog import CatalogLoader, catalog_status
from streams.app.events import parse_event
from streams.contracts import DecodeError, EmbeddedItem, Item, b64_vector, encode
from streams.metrics import Metrics
from streams.retrieval import Catalog
from streams.settings import Settings
from streams.testing import event_record


def item(item_id: str, title: str = "t", available: bool = True) -> Item:
    return Item(item_id=item_id, title=title, created_at=0, available=available)


def on_items(key: str, value: Item | None, ts: float) -> ConsumerRecord[bytes, bytes]:
    raw = None if value is None else encode(value)
    return ConsumerRecord("items", 0, 0, int(ts * 1000), 0, key.encode(), raw, None, 0, 0, [])  # type: ignore[arg-type]


def vectors(it: Item) -> tuple[bytes, bytes]:
    return it.item_id.encode(), encode(EmbeddedItem(item=it, vector_b64=b64_vector(np.ones(4, np.float32))))


def test_status_counts_what_waits_for_an_embedding_and_since_when() -> None:
    loader = CatalogLoader(Settings(), Catalog(4))
    loader.ready.set()
    now = time.time()
    loader.follow_items([on_items("a", item("a"), now - 100), on_items("b", item("b"), now - 40),
                         on_items("c", item("c"), now - 10), on_items("x", None, now)])
    loader.follow_items([ConsumerRecord("items", 0, 1, 0, 0, b"bad", b"{", None, 0, 1, [])])  # type: ignore[arg-type]
    loader.load([vectors(item("a"))])
    st = catalog_status(loader)
    assert (st["items_on_topic"], st["items"], st["items_waiting"]) == (3, 1, 2)
    assert 39 < st["oldest_wait_s"] < 60 and st["catalog_loaded"] and not st["catalog_ready"]
    assert "b" in loader.progress and "a" not in loader.progress

    # a new version of an embedded item waits until that version is embedded
    loader.follow_items([on_items("a", item("a", "new title"), now)])
    loader.load([vectors(item("b"))])
    assert catalog_status(loader)["items_waiting"] == 2 and "a" not in loader.progress  # a still has a vector
    loader.follow_items([on_items("c", None, now)])  # tombstoned while it waited: nothing to wait for
    loader.load([vectors(item("a", "new title"))])
    st = catalog_status(loader)
    assert (st["items_on_topic"], st["items_waiting"], st["oldest_wait_s"], st["catalog_ready"]) == (2, 0, 0.0, True)


def test_not_ready_before_the_topics_are_read() -> None:
    loader = CatalogLoader(Settings(), Catalog(4))
    assert catalog_status(loader)["catalog_ready"] is False


def test_the_metrics_read_the_status() -> None:
    metrics, loader = Metrics(), CatalogLoader(Settings(), Catalog(4))
    metrics.track_catalog(lambda: catalog_status(loader))
    loader.follow_items([on_items("a", item("a"), time.time() - 30), on_items("b", item("b", available=False), 0)])
    loader.load([vectors(item("b", available=False))])

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert sample("streamrec_catalog_items_on_topic") == 2 and sample("streamrec_catalog_items_waiting") == 1
    assert sample("streamrec_catalog_items_retired") == 1
    assert 29 < (sample("streamrec_catalog_oldest_wait_seconds") or 0) < 60


def test_an_event_on_an_item_waiting_for_its_vector_is_accepted_and_one_never_on_the_topic_is_not() -> None:
    loader = CatalogLoader(Settings(), Catalog(4))
    loader.follow_items([on_items("b", item("b"), time.time())])
    tp = TopicPartition("events", 0)
    assert parse_event(event_record(tp, 0, "u", "b", time.time()), loader.catalog).item_id == "b"
    with pytest.raises(DecodeError, match="unknown_item"):
        parse_event(event_record(tp, 1, "u", "never-sent", time.time()), loader.catalog)
    assert loader.catalog.vector("b") is None and loader.catalog.embedded_count == 0


def test_the_items_topic_retires_and_brings_back_at_once_whatever_order_the_topics_are_read_in() -> None:
    a, b, c, c_off = item("a"), item("b"), item("c"), item("c", available=False)
    on_topic = [on_items("a", a, 1), on_items("b", b, 1), on_items("c", c, 1), on_items("b", None, 2),
                on_items("c", c_off, 2)]
    vector_records = [vectors(a), vectors(b), vectors(c), vectors(c_off)]  # b's tombstone not passed on yet
    for items_first in (True, False):  # a restarted worker reads the two topics interleaved in any order
        loader = CatalogLoader(Settings(), Catalog(4))
        if items_first:
            loader.follow_items(on_topic)
        loader.load(vector_records)
        if not items_first:
            loader.follow_items(on_topic)
        catalog = loader.catalog
        assert catalog.ids(catalog.listable_rows()) == ["a"] and catalog.retired == 2, items_first
    # sent again: listed at once with the vector it had, before the encoder embeds the new version
    loader.follow_items([on_items("b", item("b", "new title"), 3)])
    assert catalog.ids(catalog.listable_rows()) == ["a", "b"] and loader.progress.waiting == 1
