"""The catalog every worker holds: the whole ``<items>-vectors`` topic, read at start and followed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app import faust_internals
from streams.contracts import EmbeddedItem, Item, decode, vector_of, vectors_topic_name
from streams.retrieval import Catalog, CatalogItem
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


def to_catalog_item(item: Item) -> CatalogItem:
    return CatalogItem(item.item_id, item.title, tuple(item.categories), item.created_at, item.available)


class CatalogLoader:
    """Reads the whole ``<items>-vectors`` topic into the local catalog, then follows it.

    ``ready`` is set once everything that was in the topic at start-up is loaded, so a
    restarted worker does not treat known items as unknown.
    """

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.ready = asyncio.Event()
        #: Held while the catalog is read off the event loop (the recommender's thread), so an
        #: upsert never changes it under a batch in progress.
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        topic = vectors_topic_name(self.settings)
        consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(),
            enable_auto_commit=False,
            group_id=None,
            isolation_level=self.settings.isolation_level,
        )
        await consumer.start()
        try:
            parts = await self._partitions(consumer, topic)
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            pending = {tp for tp, off in end.items() if off > 0}
            if not pending:
                self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batch.values():
                    async with self.lock:
                        self.load([(r.key, r.value) for r in records])
                if pending:
                    pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
                    if not pending:
                        log.info("catalog loaded: %d items", len(self.catalog))
                        self.ready.set()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        # The topic is declared by the app at start; metadata can lag behind for a moment.
        for _ in range(600):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await faust_internals.force_metadata_update(consumer)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic!r} does not exist")

    def load(self, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """Apply these ``<items>-vectors`` records ``(key, value)`` in order: add or replace each item,
        retire it on a tombstone (a null value) or when it is not ``available``."""
        items: list[CatalogItem] = []
        vectors: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        for key, raw in records:
            if raw is None:
                self._upsert(items, vectors)  # a tombstone after its item's version in the same batch wins
                items, vectors = [], []
                self.catalog.retire([key.decode("utf-8", "replace") if key else ""])
                continue
            rec = decode(raw, EmbeddedItem)
            vec = vector_of(rec.vector_b64)
            if vec.shape != (self.catalog.dim,):
                log.error("item %s has a %s-d vector, expected %d", rec.item.item_id, vec.shape, self.catalog.dim)
                continue
            items.append(to_catalog_item(rec.item))
            vectors.append(vec)
        self._upsert(items, vectors)

    def _upsert(self, items: list[CatalogItem], vectors: list[np.ndarray[Any, np.dtype[np.float32]]]) -> None:
        if items:
            self.catalog.upsert(items, np.stack(vectors))
