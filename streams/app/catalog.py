"""The catalog every worker holds: the whole ``<items>-vectors`` topic, read at start and followed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.app import faust_internals
from streams.app.catalog_progress import CatalogProgress
from streams.contracts import (
    DecodeError,
    EmbeddedItem,
    Item,
    Tombstone,
    decode,
    decode_item_record,
    vector_of,
    vectors_topic_name,
)
from streams.retrieval import Catalog, CatalogItem
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


def to_catalog_item(item: Item) -> CatalogItem:
    return CatalogItem(item.item_id, item.title, tuple(item.categories), item.created_at, item.available)


def catalog_status(loader: CatalogLoader) -> dict[str, Any]:
    """What the status page and the metrics say of the catalog: items on the ``items`` topic versus
    embedded, the retired, the waiting and the oldest wait; ``catalog_loaded`` (events are served) and
    ``catalog_ready`` (loaded, and nothing waits for an embedding)."""
    progress = loader.progress
    return {
        "items": loader.catalog.embedded_count,
        "items_on_topic": progress.live,
        "items_retired": loader.catalog.retired,
        "items_waiting": progress.waiting,
        "oldest_wait_s": round(progress.oldest_wait_s(time.time()), 3),
        "catalog_loaded": loader.ready.is_set(),
        "catalog_ready": loader.caught_up,
    }


class CatalogLoader:
    """Reads the whole ``<items>-vectors`` topic into the local catalog, then follows it; and follows the
    ``items`` topic beside it, to know what waits for an embedding (:attr:`progress`).

    ``ready`` is set once everything that was in both topics at start-up is loaded, so a restarted
    worker does not treat known items as unknown.
    """

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.progress = CatalogProgress()
        self.ready = asyncio.Event()
        #: Held while the catalog is read off the event loop (the recommender's thread), so an
        #: upsert never changes it under a batch in progress.
        self.lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._items_read: dict[TopicPartition, int] = {}  # items partition -> next offset applied here
        self._items_advanced = asyncio.Condition()

    @property
    def caught_up(self) -> bool:
        """Loaded, and every item on the ``items`` topic embedded in its newest version."""
        return self.ready.is_set() and not self.progress.waiting

    async def run(self) -> None:
        vectors = vectors_topic_name(self.settings)
        consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(),
            enable_auto_commit=False,
            group_id=None,
            isolation_level=self.settings.isolation_level,
        )
        await consumer.start()
        try:
            parts = await topic_partitions(consumer, vectors)
            items = await topic_partitions(consumer, self.settings.topic_items)
            consumer.assign(parts + items)
            await consumer.seek_to_beginning(*parts, *items)
            self._consumer, self._items_read = consumer, dict.fromkeys(items, 0)
            parts += items
            end = await consumer.end_offsets(parts)
            pending = {tp for tp, off in end.items() if off > 0}
            if not pending:
                self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batch.items():
                    async with self.lock:
                        if tp.topic == vectors:
                            self.load([(r.key, r.value) for r in records])
                        else:
                            self.follow_items(records)
                await self._advance(consumer)
                if pending:
                    pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
                    if not pending:
                        log.info("catalog loaded: %d items embedded", self.catalog.embedded_count)
                        self.ready.set()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _advance(self, consumer: AIOKafkaConsumer) -> None:
        """Note how far the ``items`` partitions are applied (positions skip transaction markers too)."""
        for tp in self._items_read:
            self._items_read[tp] = await consumer.position(tp)
        async with self._items_advanced:
            self._items_advanced.notify_all()

    async def read_items_to_end(self, timeout_s: float = 5.0) -> None:
        """Wait until every ``items`` record produced before this call is applied here (at most
        ``timeout_s``): an event's item produced just before the event may not have been read yet."""
        consumer, read = self._consumer, self._items_read
        if consumer is None:
            return
        try:
            end = await consumer.end_offsets(list(read))
            async with self._items_advanced:
                await asyncio.wait_for(
                    self._items_advanced.wait_for(lambda: all(read[tp] >= off for tp, off in end.items())), timeout_s
                )
        except Exception as exc:  # the broker away, or slow: judge with what was read
            log.warning("items topic not read to its end (%r)", exc)

    def follow_items(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Note these ``items`` records in :attr:`progress`; give new items a catalog row before their vectors
        arrive, so their events count at once; retire or bring back items at once, without waiting for the
        encoder (unusable records are the items agent's to dead-letter)."""
        new: list[CatalogItem] = []
        touched: dict[str, None] = {}
        for r in records:
            try:
                item = decode_item_record(r.key, r.value)
            except DecodeError:
                continue
            touched[item.item_id] = None
            if isinstance(item, Tombstone):
                self.progress.on_topic_deleted(item.item_id)
            else:
                self.progress.on_topic(item, r.timestamp / 1000.0)
                new.append(to_catalog_item(item))
        self.catalog.announce(new)
        for item_id in touched:
            self._apply_availability(item_id)

    def _apply_availability(self, item_id: str) -> None:
        if self.progress.available(item_id):
            self.catalog.restore([item_id])
        else:
            self.catalog.retire([item_id])

    def load(self, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """Apply these ``<items>-vectors`` records ``(key, value)`` in order: add or replace each item and
        its vector; whether it may be listed follows its newest record on ``items`` once that was read
        (:meth:`follow_items`), else its own ``available`` (a tombstone retires it)."""
        items: list[CatalogItem] = []
        vectors: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        for key, raw in records:
            if raw is None:
                self._upsert(items, vectors)  # a tombstone after its item's version in the same batch wins
                items, vectors = [], []
                item_id = key.decode("utf-8", "replace") if key else ""
                if not self.progress.available(item_id):  # not sent again on items since
                    self.catalog.retire([item_id])
                self.progress.vector_deleted(item_id)
                continue
            rec = decode(raw, EmbeddedItem)
            vec = vector_of(rec.vector_b64)
            if vec.shape != (self.catalog.dim,):
                log.error("item %s has a %s-d vector, expected %d", rec.item.item_id, vec.shape, self.catalog.dim)
                continue
            self.progress.embedded(rec.item)
            item = to_catalog_item(rec.item)
            on_topic = self.progress.available(item.item_id)  # the newest version on items decides, if read
            items.append(item if on_topic is None else dataclasses.replace(item, available=on_topic))
            vectors.append(vec)
        self._upsert(items, vectors)

    def _upsert(self, items: list[CatalogItem], vectors: list[np.ndarray[Any, np.dtype[np.float32]]]) -> None:
        if items:
            self.catalog.upsert(items, np.stack(vectors))


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``; the app declares its topics at start and metadata can lag behind a moment."""
    for _ in range(600):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await faust_internals.force_metadata_update(consumer)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic!r} does not exist")
