"""The agents' input, read and committed by offset: every event handled once it is read, none skipped.

Faust's own bookkeeping is not enough for "nothing lost":

* Its streams ack more than the agent handled: once ``take_events`` is left (a stop), its
  passive drainer goes on acking queued events, and an event that arrives while flow control is
  suspended (a stop, a rebalance) is acked as "skipped". A commit then covers events nobody
  processed. So the input topics are declared ``acks=False`` and :class:`Input` commits,
  after a batch's output is acknowledged and its state written, the offset after the last event
  handled in each partition.
* Its fetcher can hand a partition over with a hole: when a restarted worker's recovery ends,
  stream partitions are resumed before they are seeked to the committed offsets, and records
  fetched in between can be dropped as "already read" (a SIGTERM-and-restart lost 82 events of
  one partition that way). So each batch is checked against the offsets already handled, and a
  hole is read straight from the broker and put in front of the events that follow it.

Kafka offsets may also skip for good reasons (transaction markers); reading such a hole finds
no record and costs one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.streams import Stream
from faust.transport.consumer import Consumer
from faust.types import TP, EventT, StreamT

from streams.app.output import Outbox, Output
from streams.security import KafkaConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One input message, whether Faust delivered it or a hole was read for it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds, as Kafka stamped it

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @classmethod
    def of_event(cls, event: EventT[Any]) -> Record:
        m = event.message
        return cls(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)

    @classmethod
    def of_consumer_record(cls, r: ConsumerRecord[bytes, bytes]) -> Record:
        return cls(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp / 1000.0)


Work = Callable[[Sequence[Record]], Coroutine[Any, Any, Outbox]]


def next_offsets(batch: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record.

    >>> next_offsets([Record("t", 0, 7, None, None, 0.0), Record("t", 1, 2, None, None, 0.0)])
    {TopicPartition(topic='t', partition=0): 8, TopicPartition(topic='t', partition=1): 3}
    """
    out: dict[TopicPartition, int] = {}
    for rec in batch:
        out[rec.tp] = max(out.get(rec.tp, 0), rec.offset + 1)
    return out


async def read_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of ``tp`` at offsets ``start`` to ``end - 1``, read with ``consumer`` (``tp`` assigned).

    Offsets without a record (transaction markers, aborted records under ``read_committed``) are
    passed over: the loop ends on the consumer's position, not on a record count.
    """
    consumer.seek(tp, start)
    while await consumer.position(tp) < end:
        fetched = await consumer.getmany(tp, timeout_ms=1000)
        for record in fetched.get(tp, []):
            if record.offset < end:
                yield record


def assigned_partitions(app: faust.App) -> set[TopicPartition]:
    """The partitions Faust's consumer holds now, as aiokafka ``TopicPartition``s."""
    return {TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()}


class Input:
    """One agent's input topic: its micro-batches handled by ``work`` in offset order, holes filled, the
    output published by ``output`` and the offsets of what was handled committed.

    :meth:`run` is the agent's body. A hole shows when the partition's next record arrives; one at
    the very end of a partition waits for that next record. Records before the next offset to
    handle (delivered again after a rebalance or a hole was read) are skipped: they were handled.
    """

    def __init__(
        self,
        app: faust.App,
        kafka: KafkaConnection,
        work: Work,
        output: Output,
        commit_interval_s: float,
        on_hole: Callable[[str, int], None] = lambda topic, count: None,
    ) -> None:
        self.app = app
        self.on_hole = on_hole
        self.kafka = kafka
        self.work = work
        self.output = output
        self.commit_interval_s = commit_interval_s
        self.next: dict[TopicPartition, int] = {}  # the next offset to handle
        self.committed: dict[TopicPartition, int] = {}
        self._reader: AIOKafkaConsumer | None = None
        self._last_commit = time.monotonic()
        self._commit_lock = asyncio.Lock()
        app.on_partitions_revoked.connect(self._forget)

    def _forget(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A partition that comes back starts from its committed offset, maybe moved on elsewhere.
        revoked: set[TP] = args[0]
        for tp in revoked:
            key = TopicPartition(tp.topic, tp.partition)
            for known in (self.next, self.committed):
                known.pop(key, None)

    async def run(self, stream: StreamT[Any], size: int, within_s: float) -> None:
        """The agent: ``work`` on each micro-batch, then its offsets are committed (every interval).

        A stop (SIGTERM, rebalance) cancels the agent; a batch in hand is finished first, so its
        output and state are complete before the final commit. A stop during an encoder outage
        therefore waits for the encoder (or the orchestrator's SIGKILL, which commits nothing).
        """
        try:
            async for events in cast(Stream[Any], stream).take_events(size, within=within_s):
                self._report_in(events)
                generation = self.app.consumer_generation_id
                task = asyncio.ensure_future(self._handle([Record.of_event(ev) for ev in events], generation))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    await task
                    raise
                await self.commit()
        finally:
            await self.commit(force=True)
            await self.stop()

    def _report_in(self, events: Sequence[EventT[Any]]) -> None:
        # Faust tells its sensors a message came in only on acking topics; it still tells them when
        # the message is acked, so without this its per-topic counters stay empty and its gauge of
        # active messages runs negative.
        on_message_in = self.app.sensors.on_message_in
        for event in events:
            message = event.message
            if not message.tracked:
                message.tracked = True
                on_message_in(message.tp, message.offset, message)

    async def _handle(self, batch: Sequence[Record], generation: int, max_backoff_s: float = 30.0) -> None:
        """Handle ``batch``; the events of a partition whose output was not published (its transaction
        failed) are handled again, as long as the partition is ours and no rebalance intervened.

        Retrying here rather than reading them back as a hole later matters at a partition's end:
        a hole shows only when a later record arrives, which may never happen.
        """
        pending = await self.complete(batch)
        delay = min(0.5, max_backoff_s)
        while pending:
            outbox = await self.work(pending)
            offsets = next_offsets(pending)
            done = await self.output.publish(outbox, offsets, generation)
            outbox.published(done)
            for tp in done:
                self.next[tp] = max(self.next.get(tp, 0), offsets[tp])
            failed = offsets.keys() - done
            if not failed or generation != self.app.consumer_generation_id:
                return  # after a rebalance the partitions' owners read the events again
            again = {tp for tp in failed if await self.output.ready(tp)}  # not those taken away
            pending = [rec for rec in pending if rec.tp in again]
            if pending:
                log.warning("%d events of %d partitions not published; handling them again in %.1f s",
                            len(pending), len(again), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

    async def complete(self, batch: Sequence[Record]) -> list[Record]:
        """``batch`` with every hole before or inside it read from the broker, in offset order per partition."""
        out: list[Record] = []
        expected = dict(self.next)
        for rec in batch:
            tp = rec.tp
            if tp not in expected:
                await self.output.ready(tp)
                expected[tp] = await self._committed(tp)
            if rec.offset < expected[tp]:
                continue  # handled already
            if rec.offset > expected[tp]:
                out.extend(await self._fill(tp, expected[tp], rec.offset))
            out.append(rec)
            expected[tp] = max(expected[tp], rec.offset + 1)
        return out

    async def commit(self, *, force: bool = False) -> None:
        """Commit what was handled since the last commit: when the interval passed, or now if ``force``."""
        if self.output.commits_offsets:
            return
        if not force and time.monotonic() - self._last_commit < self.commit_interval_s:
            return
        async with self._commit_lock:
            self._last_commit = time.monotonic()
            assigned = assigned_partitions(self.app)
            due = {tp: off for tp, off in self.next.items() if tp in assigned and off > self.committed.get(tp, -1)}
            if not due:
                return
            consumer = cast(Consumer, self.app.consumer)
            sensor_state = self.app.sensors.on_commit_initiated(consumer)
            try:
                # Consumer._commit commits the given offsets (commit() would commit acked ones).
                done = await consumer._commit(cast(Any, due))
            except Exception as exc:  # the events are read again and skipped as replays: nothing lost
                log.warning("offset commit failed (%s); the events after the last commit will be replayed", exc)
                return
            self.app.sensors.on_commit_completed(consumer, sensor_state)
            if done:
                self.committed.update(due)
                self.app.monitor.on_tp_commit(cast(Any, due))

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            # The group's id, to read its committed offsets; it never joins (partitions are assigned).
            self._reader = AIOKafkaConsumer(
                **self.kafka.aiokafka(),
                group_id=self.app.conf.id,
                enable_auto_commit=False,
                isolation_level="read_committed" if self.output.commits_offsets else "read_uncommitted",
            )
            await self._reader.start()
        return self._reader

    async def _committed(self, tp: TopicPartition) -> int:
        """Where this partition starts for the group: its committed offset, else the log's start."""
        consumer = await self._consumer()
        committed = await consumer.committed(tp)
        if committed is not None and committed >= 0:
            return int(committed)
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def _fill(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        """The records at offsets ``start`` to ``end - 1`` of ``tp``, read from the broker."""
        consumer = await self._consumer()
        consumer.assign([tp])
        got = [Record.of_consumer_record(r) async for r in read_range(consumer, tp, start, end)]
        if got:
            log.warning("%s[%d]: offsets %d-%d were not delivered; read %d records from the broker",
                        tp.topic, tp.partition, start, end - 1, len(got))
            self.on_hole(tp.topic, len(got))
        return got
