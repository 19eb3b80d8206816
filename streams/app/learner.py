"""The learner role: every serving worker's lessons folded into the shared models, snapshots published.

It reads every partition of the learning topic (assigned, not subscribed: one learner, no rebalances),
folds each record into :class:`~streams.learning.SharedModels` and, every
``STREAMREC_SNAPSHOT_INTERVAL_S``, publishes a snapshot with the learning offsets it covers to the
compacted models topic, then commits those offsets for its group. A restarted learner loads the newest
whole snapshot and seeks to the offsets inside it, so its models resume from exactly that state and the
records after it are folded once. A stop (SIGTERM) publishes a last snapshot first.

Its offsets live in the snapshot rather than in a Faust agent's commits because the two must move
together: a commit ahead of the published models would skip lessons after a crash, one behind them
would fold lessons twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from streams.app.catalog import CatalogLoader, topic_partitions
from streams.app.snapshots import read_models
from streams.learning import Lessons, SharedModels
from streams.learning.lessons import from_record
from streams.learning.snapshot import Assembler, Snapshot, chunk_keys, digest, encode, to_chunks
from streams.metrics import Metrics
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


class Learner:
    """The learner's state (models, offsets, version) and its loop (:meth:`run`)."""

    def __init__(
        self, settings: Settings, lessons_topic: str, models_topic: str, loader: CatalogLoader,
        models: SharedModels, metrics: Metrics,
    ) -> None:
        self.settings, self.lessons_topic, self.models_topic = settings, lessons_topic, models_topic
        self.loader, self.models, self.metrics = loader, models, metrics
        self.kafka = KafkaConnection.from_settings(settings)
        #: Set once the newest snapshot's items have catalog rows in its order: the catalog may load then.
        self.announced = asyncio.Event()
        self.ready = asyncio.Event()
        self.version = 0
        self.records = 0
        self.offsets: dict[int, int] = {}  # learning partition -> next offset to fold
        self.events: dict[int, int] = {}  # events partition -> offset after the newest event folded
        self.lag = 0
        self._chunks = 0  # chunks of the last published version (tombstoned once the next is whole)
        self._stale: list[bytes] = []  # chunks of older versions found on the topic at start (tombstoned too)
        self._dirty = False
        #: The snapshot this learner resumed from, and whether its models came back byte-equal to it.
        self.restored: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        return {"role": "learn", "version": self.version, "records": self.records, "lag": self.lag,
                "offsets": self.offsets, "events": self.events, "restored": self.restored}

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            # A group of its own (not the learner app's, which Faust's consumer joins): it only ever commits.
            **self.kafka.aiokafka(), group_id=f"{self.settings.app_id}-learner-lessons", enable_auto_commit=False,
            isolation_level=self.settings.isolation_level, max_partition_fetch_bytes=4 << 20,
        )
        producer = AIOKafkaProducer(**self.kafka.aiokafka(), enable_idempotence=True, acks="all")
        await consumer.start()
        await producer.start()
        try:
            # Before any assignment: the client then asks the broker about every topic, not the assigned ones.
            parts = await topic_partitions(consumer, self.lessons_topic)
            consumer.assign([TopicPartition(self.models_topic, 0)])
            assembler = Assembler()
            newest = await read_models(consumer, TopicPartition(self.models_topic, 0), assembler)
            if newest is not None:
                self._stale = assembler.older_keys(newest.version)
                async with self.loader.lock:
                    self.models.announce(newest.arrays["items"])
            self.announced.set()
            await self.loader.ready.wait()
            await self.restore(newest)
            consumer.assign(parts)
            for tp in parts:
                if tp.partition in self.offsets:
                    consumer.seek(tp, self.offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            await self.loop(consumer, producer, parts)
        finally:
            try:
                if self._dirty:
                    await self.publish(producer, consumer)
            finally:
                self.announced.set()
                await producer.stop()
                await consumer.stop()

    async def restore(self, snap: Snapshot | None) -> None:
        """Take the models and offsets of ``snap``, the newest whole snapshot, if there is one."""
        if snap is None:
            log.info("no snapshot on %s: learning from nothing", self.models_topic)
            return
        async with self.loader.lock:
            self.models.catalog.load_popularity(self.models.load_state(snap.arrays))
            equal = digest(self.models.state()) == digest(snap.arrays)
        self.version, self.records, self.offsets, self.events = snap.version, snap.records, snap.offsets, snap.events
        self._chunks = snap.chunks
        self.restored = {"version": snap.version, "byte_equal": equal}
        log.info("resumed from snapshot %d (%d lessons records; models byte-equal to it: %s)", snap.version,
                 snap.records, equal)

    async def loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, parts: list[TopicPartition]) -> None:
        published = time.monotonic()
        while True:
            batch = await consumer.getmany(*parts, timeout_ms=500, max_records=500)
            records = [r for tp in parts for r in batch.get(tp, [])]
            if records:
                await self.fold(records)
            await self.measure_lag(consumer, parts)
            if self._dirty and time.monotonic() - published >= self.settings.snapshot_interval_s:
                await self.publish(producer, consumer)
                published = time.monotonic()

    async def measure_lag(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
        """Records not folded yet: the end each fetch reports (the last stable offset under read_committed,
        else the highwater mark; no request) minus the position (past transaction markers too)."""
        committed_only = self.settings.isolation_level == "read_committed"
        ends = [consumer.last_stable_offset(tp) if committed_only else consumer.highwater(tp) for tp in parts]
        lag = 0
        for tp, end in zip(parts, ends, strict=True):
            position = await consumer.position(tp)
            self.offsets[tp.partition] = max(self.offsets.get(tp.partition, 0), position)
            lag += max(0, (end or 0) - position)
        self.lag = lag
        self.metrics.learner_lag.set(lag)
        if not self.ready.is_set() and lag == 0 and None not in ends:
            self.ready.set()

    async def fold(self, records: list[Any]) -> None:
        """Fold the lessons of ``records`` (learning topic records, in offset order per partition)."""
        lessons: list[Lessons] = []
        for r in records:
            try:
                partition, next_offset, mine = from_record(r.value or b"")
            except ValueError as exc:  # written by a worker of another version, or damaged: never blocks
                log.error("lessons record %s[%d]@%d skipped: %s", r.topic, r.partition, r.offset, exc)
                partition, next_offset, mine = -1, 0, None
            if mine is not None:
                lessons.append(mine)
                self.events[partition] = max(self.events.get(partition, 0), next_offset)
            self.offsets[r.partition] = r.offset + 1
        if any(item not in self.models.catalog for one in lessons for item in one.items.tolist()):
            await self.loader.read_items_to_end()  # an item produced just before its events

        def learn() -> None:
            for one in lessons:
                self.models.learn(one)

        async with self.loader.lock:
            await asyncio.to_thread(learn)
        self.records += len(records)
        self._dirty = True
        self.metrics.learner_records.inc(len(records))

    async def publish(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        """Publish the next snapshot, whole, then tombstone the previous one and commit the offsets."""
        version = self.version + 1
        offsets, events = dict(self.offsets), dict(self.events)
        async with self.loader.lock:
            state = await asyncio.to_thread(self.models.state)
        payload = await asyncio.to_thread(
            encode, Snapshot(version, time.time(), offsets, events, self.records, state)
        )
        chunks = to_chunks(payload, version)
        sent = [await producer.send(self.models_topic, value, key=key, partition=0) for key, value in chunks]
        await asyncio.gather(*sent)
        await asyncio.gather(*[await producer.send(self.models_topic, None, key=key, partition=0)
                               for key in [*chunk_keys(self.version, self._chunks), *self._stale]])
        if offsets:  # for the group's lag in Kafka's tools; a restart seeks to the snapshot's own offsets
            try:
                await consumer.commit({TopicPartition(self.lessons_topic, p): OffsetAndMetadata(o, "")
                                       for p, o in offsets.items()})
            except KafkaError as exc:
                log.warning("offsets of snapshot %d not committed (%r); the snapshot has them", version, exc)
        self.version, self._chunks, self._dirty, self._stale = version, len(chunks), False, []
        self.metrics.snapshot("published", version, len(payload))
        log.info("published snapshot %d: %.1f MB in %d chunks, %d lessons records", version, len(payload) / 1e6,
                 len(chunks), self.records)
