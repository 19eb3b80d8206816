"""Exactly-once: each input partition's output and its next offset, committed in one Kafka transaction.

Faust's own ``processing_guarantee="exactly_once"`` is not used: streamrec commits its input offsets
itself (see :mod:`streams.app.input`), and Faust 0.15.3's transactions let duplicates through after
a SIGKILL. Here every input partition has a transactional producer whose id is fixed by the partition
(``<app id>-<topic>-<partition>``), the classic Kafka scheme (aiokafka cannot send the consumer group's
generation with the offsets, KIP-447):

* A new owner of a partition starts its producer as soon as the partition is assigned, before it
  reads the committed offset. That fences the previous owner's producer (a zombie can no longer
  commit) and ends its open transaction, so the committed offset read next is final.
* A batch is published only if no rebalance happened since it was taken; otherwise it is dropped
  unsent, and its events are handled again by the partition's owner (Input does it at once for the
  partitions that stayed ours).
* A failed transaction is aborted; the partition gets a new producer (only while it is still ours:
  one started during a rebalance would fence the next owner) and Input handles the events again.
* User states are restored here, not by Faust's table recovery (which, reading committed data,
  waits for offsets that are transaction markers and never arrive): on assignment, after the
  fencing, the partition's changelog is read up to its last stable offset, aborted writes skipped
  (:mod:`streams.app.guarantee.restore`); a revoked partition's states are evicted.

Readers of the output topics must use ``isolation.level=read_committed``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set

import faust
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from streams.app.admin import acreate_topics
from streams.app.batch import Outbox, Outgoing
from streams.app.guarantee.base import Guarantee
from streams.app.guarantee.restore import StateRestore
from streams.app.guarantee.states import PartitionedStates
from streams.contracts.topics import user_state_changelog
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)

ProducerFactory = Callable[[str], AIOKafkaProducer]


class ExactlyOnce(Guarantee):
    """Transactional producers for the input partitions of ``topics`` this worker owns."""

    isolation_level = "read_committed"
    states: PartitionedStates

    def __init__(
        self,
        app: faust.App,
        kafka: KafkaConnection,
        topics: Iterable[str],
        restore: StateRestore | None = None,
        producer_factory: ProducerFactory | None = None,
        states: PartitionedStates | None = None,
    ) -> None:
        super().__init__(app, kafka)
        self.topics = set(topics)
        # No Faust table: the states are written in the transactions, restored by ``restore`` when
        # their partition is assigned, and evicted when it is revoked.
        self.states = states if states is not None else PartitionedStates()
        self.restore = restore
        self._new_producer = producer_factory or (lambda txn_id: transactional_producer(kafka, txn_id))
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._ready: dict[TopicPartition, asyncio.Event] = {}
        # Given to us by the last assignment and not revoked since: only these get new producers. (A
        # revoked partition stays in the consumer's assignment until the rebalance ends; restarting
        # its producer then would fence its new owner.)
        self._owned: set[TopicPartition] = set()
        self._fenced: set[TopicPartition] = set()  # lost to a newer owner; the rebalance is to come
        self._lock = asyncio.Lock()  # a publish and a rebalance never overlap

    @classmethod
    def declare(cls, app: faust.App, settings: Settings, kafka: KafkaConnection) -> ExactlyOnce:
        """The guarantee for ``settings``' items and events, its states restored from their changelog."""
        changelog = user_state_changelog(settings)
        declare = functools.partial(
            acreate_topics, kafka, {changelog: settings.partitions}, [changelog],
            replication=app.conf.topic_replication_factor,
        )
        states = PartitionedStates()
        restore = StateRestore(kafka, settings.topic_events, changelog, states, declare)
        guarantee = cls(app, kafka, {settings.topic_items, settings.topic_events}, restore, states=states)
        guarantee.changelog = changelog
        return guarantee

    def _ours(self, tps: set[TopicPartition]) -> list[TopicPartition]:
        return [tp for tp in tps if tp.topic in self.topics]

    def _event(self, tp: TopicPartition) -> asyncio.Event:
        return self._ready.setdefault(tp, asyncio.Event())

    async def assigned(self, tps: set[TopicPartition]) -> None:
        async with self._lock:
            ours = self._ours(tps)
            self._owned |= set(ours)
            self._fenced -= set(ours)
            results = await asyncio.gather(
                *(self._start(tp) for tp in ours if tp not in self._producers), return_exceptions=True
            )
        for result in results:  # such a partition is started again by ready(), before its first batch
            if isinstance(result, BaseException):
                log.warning("a transactional producer did not start (%s); retrying before its first batch", result)

    async def _start(self, tp: TopicPartition) -> None:
        producer = self._new_producer(f"{self.group_id}-{tp.topic}-{tp.partition}")
        try:
            await producer.start()  # init_transactions: fences the previous owner, ends its open transaction
            if self.restore is not None and tp.topic == self.restore.input_topic:
                await self.restore.restore(tp.partition)
        except BaseException:
            await producer.stop()
            raise
        self._producers[tp] = producer
        self._event(tp).set()

    async def revoked(self, tps: set[TopicPartition]) -> None:
        async with self._lock:  # after the publish in flight, if any
            for tp in self._ours(tps):
                self._owned.discard(tp)
                self._fenced.discard(tp)
                await self._drop(tp)
                if self.restore is not None and tp.topic == self.restore.input_topic:
                    # Restored again (from the changelog) if the partition comes back.
                    self.states.evict(tp.partition)

    async def _drop(self, tp: TopicPartition) -> None:
        self._event(tp).clear()
        producer = self._producers.pop(tp, None)
        if producer is not None:
            await producer.stop()

    async def ready(self, tp: TopicPartition, max_backoff_s: float = 30.0) -> bool:
        """Wait until ``tp`` has a started producer: the one its assignment started, or one started here
        after a failure (retried with backoff). False if ``tp`` left the consumer's assignment first
        (its batch is then dropped as stale). A fenced partition waits for the rebalance."""
        delay, next_try = 0.5, 0.0
        while tp in self.assignment():
            if self._restartable(tp) and time.monotonic() >= next_try:
                async with self._lock:
                    try:
                        if self._restartable(tp):
                            await self._start(tp)
                    except Exception as exc:
                        log.warning("%s[%d]: no producer (%s); again in %.1f s", tp.topic, tp.partition, exc, delay)
                        next_try = time.monotonic() + delay
                        delay = min(delay * 2, max_backoff_s)
            try:
                await asyncio.wait_for(self._event(tp).wait(), timeout=min(delay, 1.0))
                return True
            except TimeoutError:
                continue
        return False

    def _restartable(self, tp: TopicPartition) -> bool:
        return tp in self._owned and tp not in self._fenced and tp not in self._producers

    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        async with self._lock:
            current = self.generation()
            if generation != current:
                log.info("a batch of generation %d dropped unsent (now %d): handled again where still ours",
                         generation, current)
                return set()
            messages = outbox.by_source()
            tps = [tp for tp in offsets if tp in self._producers]  # the others were lost (fenced)
            results = await asyncio.gather(
                *(self._commit(tp, messages.get(tp, []), offsets[tp]) for tp in tps), return_exceptions=True
            )
        return {tp for tp, result in zip(tps, results, strict=True) if not isinstance(result, BaseException)}

    async def _commit(self, tp: TopicPartition, messages: list[Outgoing], offset: int) -> None:
        producer = self._producers[tp]
        try:
            async with producer.transaction():
                sent = [await producer.send(m.topic, m.value, key=m.key) for m in messages]
                await asyncio.gather(*sent)  # a failed send aborts the transaction here, not unnoticed
                await producer.send_offsets_to_transaction({tp: offset}, self.group_id)
        except ProducerFenced:
            # A newer owner started its producer: we lost the partition and will hear so at the next
            # rebalance. Until then its batch waits in ready() (restarting would fence the new owner).
            log.warning("%s[%d]: fenced by a newer owner; its transaction was aborted", tp.topic, tp.partition)
            self._fenced.add(tp)
            await self._drop(tp)
            raise
        except Exception:
            # The transaction was aborted: ready() starts a fresh producer (which restores the
            # partition's states as committed) before the batch's events are handled again.
            log.exception("transaction for %s[%d] failed; nothing of it is visible", tp.topic, tp.partition)
            await self._drop(tp)
            raise

    async def commit(self, handled: Mapping[TopicPartition, int]) -> None:
        """Nothing to do: :meth:`publish` commits each partition's offset in its transaction."""

    async def stop(self) -> None:
        async with self._lock:
            for tp in list(self._producers):
                await self._drop(tp)


def transactional_producer(kafka: KafkaConnection, transactional_id: str) -> AIOKafkaProducer:
    # Batches of up to 1 MB, no linger, as the worker's own producer (lists are ~1 KB).
    return AIOKafkaProducer(
        **kafka.aiokafka(), transactional_id=transactional_id, linger_ms=0, max_batch_size=1 << 20
    )
