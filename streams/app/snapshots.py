"""A serving worker's side of the learner: the models topic followed, each whole snapshot loaded off the
event loop and swapped in between two batches (partitions are never paused for it).

A serving worker also learns its own batches in place, as a ``both`` worker does, so its own users'
engagements count at once rather than a snapshot later; each batch's lessons are kept (:meth:`own`)
until a snapshot includes them, and re-applied on top of every snapshot that does not yet. Only the
other workers' lessons arrive a snapshot late.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app.catalog import CatalogLoader
from streams.learning import Lessons, SharedModels
from streams.learning.snapshot import Assembler, Snapshot, decode, digest
from streams.metrics import Metrics
from streams.recommender import Recommender
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)

#: A serving worker's own lessons kept for the next snapshot, in bytes (the oldest go first): while the
#: learner is away they pile up, and the learner folds them from the topic when it is back anyway.
MAX_OWN_BYTES = 64 << 20


async def read_models(consumer: AIOKafkaConsumer, tp: TopicPartition, assembler: Assembler) -> Snapshot | None:
    """Feed ``assembler`` every record of the models partition ``tp`` (assigned) up to its end now; the
    newest whole snapshot, decoded, if there is one."""
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    while await consumer.position(tp) < end:
        for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
            assembler.add(record.key, record.value)
    latest = assembler.latest()
    return None if latest is None else await asyncio.to_thread(decode, latest[1])


class SnapshotFollower:
    """Loads the newest snapshot before the worker serves (:attr:`ready`), then each newer one as it
    completes on the topic. ``events_handled`` gives, per events partition, the offset after the last
    event this worker handled: what the staleness in events is measured against."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        loader: CatalogLoader,
        recommender: Recommender,
        make_models: Callable[[], SharedModels],
        metrics: Metrics,
        events_handled: Callable[[], Mapping[int, int]],
    ) -> None:
        self.settings, self.topic, self.loader = settings, topic, loader
        self.recommender, self.make_models, self.metrics = recommender, make_models, metrics
        self.events_handled = events_handled
        #: Set once the newest snapshot's items have catalog rows in its order: the catalog may load then.
        self.announced = asyncio.Event()
        self.ready = asyncio.Event()
        #: The first snapshot loaded, and whether the models came back byte-equal to it.
        self.restored: dict[str, Any] | None = None
        #: The snapshot served (its arrays dropped once loaded), None before the first.
        self.serving: Snapshot | None = None
        self._started = time.time()
        self._refused = 0  # the newest version that could not be loaded (not tried again)
        #: This worker's lessons no snapshot served includes yet: (events partition, next offset, lessons).
        self._own: collections.deque[tuple[int, int, Lessons]] = collections.deque()
        self._own_bytes = 0
        metrics.track_models(self.age_s, self.events_behind)

    def own(self, partition: int, next_offset: int, lessons: Lessons) -> None:
        """This worker published ``lessons`` of events partition ``partition`` up to ``next_offset``."""
        self._own.append((partition, next_offset, lessons))
        self._own_bytes += lessons.nbytes
        while self._own_bytes > MAX_OWN_BYTES:
            self._own_bytes -= self._own.popleft()[2].nbytes

    def age_s(self) -> float:
        """Seconds since the served snapshot was made (since this worker started, before the first one)."""
        return time.time() - (self.serving.created_at if self.serving else self._started)

    def events_behind(self) -> float:
        done = self.serving.events if self.serving else {}
        return float(sum(max(0, offset - done.get(p, 0)) for p, offset in self.events_handled().items()))

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(), enable_auto_commit=False, group_id=None,
            max_partition_fetch_bytes=4 << 20,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            assembler = Assembler()
            newest = await read_models(consumer, tp, assembler)
            if newest is not None:
                async with self.loader.lock:
                    self.make_models().announce(newest.arrays["items"])
            self.announced.set()
            await self.loader.ready.wait()
            if newest is not None:
                await self._load(newest)
            if newest is not None and self.serving is not None and self.serving.version == newest.version:
                async with self.loader.lock:
                    equal = digest(self.recommender.shared().state()) == digest(newest.arrays)
                self.restored = {"version": newest.version, "byte_equal": equal}
            self.ready.set()
            while True:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    assembler.add(record.key, record.value)
                await self._take(assembler)
        finally:
            self.announced.set()  # a stopping worker must not hang the catalog or a batch waiting for it
            self.ready.set()
            await consumer.stop()

    async def _take(self, assembler: Assembler) -> None:
        """Load the assembler's newest whole snapshot if it is newer than the one served (and not refused)."""
        latest = assembler.latest()
        if latest is None or latest[0] <= max(self.serving.version if self.serving else 0, self._refused):
            return
        try:
            snap = await asyncio.to_thread(decode, latest[1])
        except (ValueError, KeyError, OSError) as exc:
            self._refuse(latest[0], exc)
            return
        await self._load(snap)

    def _refuse(self, version: int, exc: Exception) -> None:
        log.error("snapshot %d not loaded, serving the one before: %r", version, exc)
        self._refused = version

    async def _load(self, snap: Snapshot) -> None:
        """Load ``snap`` into new models off the loop, then swap them in between two batches with this
        worker's own lessons the snapshot does not include yet learned again on top."""
        started = time.perf_counter()
        try:
            models = self.make_models()
            async with self.loader.lock:  # the catalog's rows, read while no upsert runs
                remap = models.remap(snap.arrays["items"])
            popularity = await asyncio.to_thread(models.load_state, snap.arrays, remap)
        except (ValueError, KeyError, OSError) as exc:  # e.g. a learner of another version: keep serving
            self._refuse(snap.version, exc)
            return
        async with self.loader.lock:  # between two batches
            self.recommender.use(models, popularity)
            self._own = collections.deque((p, o, one) for p, o, one in self._own if o > snap.events.get(p, 0))
            self._own_bytes = sum(one.nbytes for *_, one in self._own)
            for *_, lessons in self._own:  # this worker's own, learned in place before: on top of the snapshot again
                models.learn(lessons)
        self.serving = Snapshot(snap.version, snap.created_at, snap.offsets, snap.events, snap.records, {}, snap.size)
        self.metrics.snapshot("loaded", snap.version, snap.size)
        log.info("serving snapshot %d (%.1f MB, %d lessons records; loaded in %.2f s)", snap.version,
                 snap.size / 1e6, snap.records, time.perf_counter() - started)
