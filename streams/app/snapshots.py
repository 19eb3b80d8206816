"""A serving worker's side of the learner: the models topic followed, each whole snapshot loaded off the
event loop and swapped in between two batches (partitions are never paused for it).

A serving worker also learns its own batches in place, as a ``both`` worker does, so its own users'
engagements count at once rather than a snapshot later; each batch's lessons are kept (:meth:`own`)
until a snapshot includes them, and re-applied on top of every snapshot that does not yet. With
``STREAMREC_FOLLOW_LESSONS`` (the default) it also reads the learning topic and learns the other workers'
lessons as they arrive (:meth:`learn_others`), kept the same way until a snapshot includes them: every
worker's models are then as fresh as one worker's, at the cost of each worker learning the whole stream.
The learner's snapshots stay the models' record: each one swapped in replaces what was learned here.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app.catalog import CatalogLoader
from streams.learning import Lessons, SharedModels
from streams.learning.lessons import from_record
from streams.learning.snapshot import Assembler, Snapshot, decode, digest
from streams.metrics import Metrics
from streams.recommender import Recommender
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)

#: A serving worker's own lessons kept for the next snapshot, in bytes (the oldest go first): while the
#: learner is away they pile up, and the learner folds them from the topic when it is back anyway.
MAX_OWN_BYTES = 64 << 20
#: Own lessons records not read back yet, by (events partition, next offset): an aborted one never is.
MAX_OWN_KEYS = 100_000


@dataclass(eq=False)
class Kept:
    """Lessons learned here that no snapshot served includes yet: this worker's own (its events ``partition``
    up to ``next_offset``) or another worker's; ``read`` is when it was read from the learning topic
    (``None``: an own record not read back yet), at ``learning`` (partition, offset)."""

    partition: int
    next_offset: int
    lessons: Lessons
    read: int | None = None
    learning: tuple[int, int] = (-1, -1)


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
        lessons_topic: str | None = None,
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
        #: This worker's lessons no snapshot served includes yet, in the order they were made.
        self._own = Bounded()
        #: The learning topic, followed for the other workers' lessons (None: not followed).
        self.lessons_topic = lessons_topic
        #: The other workers' lessons no snapshot served includes yet, in the order they were read.
        self._others = Bounded()
        self._unread: dict[tuple[int, int], collections.deque[Kept]] = {}  # own, by (partition, next offset)
        self._reads = 0
        metrics.track_models(self.age_s, self.events_behind)

    def own(self, partition: int, next_offset: int, lessons: Lessons) -> None:
        """This worker publishes ``lessons`` of events partition ``partition`` up to ``next_offset`` (told before
        it is sent, so that reading it back knows it as learned already)."""
        kept = Kept(partition, next_offset, lessons)
        self._own.add([kept])
        if self.lessons_topic is not None:
            self._unread.setdefault((partition, next_offset), collections.deque()).append(kept)
            if len(self._unread) > MAX_OWN_KEYS:
                del self._unread[next(iter(self._unread))]

    async def learn_others(self, records: Iterable[tuple[int, int, bytes | None]]) -> int:
        """Learn the lessons among ``(learning partition, offset, value)`` records that are not this worker's
        own (learned in place already), between two batches; how many were learned."""
        fresh: list[Kept] = []
        for partition, offset, value in records:
            try:
                events_partition, next_offset, lessons = from_record(value or b"")
            except ValueError as exc:
                log.warning("learning[%d]@%d skipped: %s", partition, offset, exc)
                continue
            self._reads += 1
            mine = self._unread.get((events_partition, next_offset))
            if mine:  # this worker's own, learned in place already: only where it is on the topic is new
                kept = mine.popleft()
                if not mine:
                    del self._unread[events_partition, next_offset]
            else:
                kept = Kept(events_partition, next_offset, lessons)
                fresh.append(kept)
            kept.read, kept.learning = self._reads, (partition, offset)
        if fresh:
            async with self.loader.lock:
                await asyncio.to_thread(self._learn, self.recommender.shared(), fresh)
            self._others.add(fresh)
        return len(fresh)

    def _again(self) -> list[Kept]:
        return sorted((*self._own.kept, *self._others.kept), key=lambda k: (k.read is None, k.read or 0))

    @staticmethod
    def _learn(models: SharedModels, kept: Iterable[Kept]) -> None:
        for one in kept:
            models.learn(one.lessons)

    def age_s(self) -> float:
        """Seconds since the served snapshot was made (since this worker started, before the first one)."""
        return time.time() - (self.serving.created_at if self.serving else self._started)

    def events_behind(self) -> float:
        done = self.serving.events if self.serving else {}
        return float(sum(max(0, offset - done.get(p, 0)) for p, offset in self.events_handled().items()))

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(), enable_auto_commit=False, group_id=None,
            max_partition_fetch_bytes=4 << 20, isolation_level=self.settings.isolation_level,
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
            await self._follow_lessons(consumer, tp)
            self.ready.set()
            while True:
                got = await consumer.getmany(timeout_ms=1000)
                for record in got.pop(tp, []):
                    assembler.add(record.key, record.value)
                await self.learn_others((r.partition, r.offset, r.value) for records in got.values() for r in records)
                await self._take(assembler)
        finally:
            self.announced.set()  # a stopping worker must not hang the catalog or a batch waiting for it
            self.ready.set()
            await consumer.stop()

    async def _follow_lessons(self, consumer: AIOKafkaConsumer, models: TopicPartition) -> None:
        """Add the learning topic's partitions to ``consumer``, from where the served snapshot ends."""
        if self.lessons_topic is None:
            return
        position = await consumer.position(models)
        learning = [TopicPartition(self.lessons_topic, p) for p in range(self.settings.partitions)]
        consumer.assign([models, *learning])
        consumer.seek(models, position)
        done = self.serving.offsets if self.serving else {}
        for ltp in learning:
            consumer.seek(ltp, done.get(ltp.partition, 0))

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
            self.recommender.use(models, popularity)  # popularity lives in the catalog: loaded first
            # What was learned here and is not in the snapshot: on top of it again, in the order it is on the
            # learning topic as this worker read it (as the learner folds it), the own not read back yet last;
            # off the event loop (with the other workers' lessons, up to a snapshot interval of the stream).
            self._own.keep(lambda k: k.next_offset > snap.events.get(k.partition, 0))
            self._others.keep(lambda k: k.learning[1] >= snap.offsets.get(k.learning[0], 0))
            await asyncio.to_thread(self._learn, models, self._again())
        self.serving = Snapshot(snap.version, snap.created_at, snap.offsets, snap.events, snap.records, {}, snap.size)
        self.metrics.snapshot("loaded", snap.version, snap.size)
        log.info("serving snapshot %d (%.1f MB, %d lessons records; loaded in %.2f s)", snap.version,
                 snap.size / 1e6, snap.records, time.perf_counter() - started)


class Bounded:
    """Kept lessons, oldest first, at most :data:`MAX_OWN_BYTES` of them (the oldest go: the learner folds
    them from the topic anyway)."""

    def __init__(self) -> None:
        self.kept: collections.deque[Kept] = collections.deque()
        self.nbytes = 0

    def add(self, kept: Iterable[Kept]) -> None:
        for one in kept:
            self.kept.append(one)
            self.nbytes += one.lessons.nbytes
        while self.nbytes > MAX_OWN_BYTES:
            self.nbytes -= self.kept.popleft().lessons.nbytes

    def keep(self, still: Callable[[Kept], bool]) -> None:
        self.kept = collections.deque(filter(still, self.kept))
        self.nbytes = sum(k.lessons.nbytes for k in self.kept)
