"""An agent's input, read and committed by offset: every event handled once it is read, none skipped.

Faust's own bookkeeping is not enough for "nothing lost":

* Its streams ack more than the agent handled: once a stream's batches are left (a stop), its
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
* Its consumer can also lose records at a partition's end: records fetched around a rebalance went
  missing, and with no record after them no hole ever showed (in a test, the last items of two
  partitions waited 5 minutes, until the test gave up). So :meth:`Input.catch_up`, every
  :data:`CATCH_UP_S`, reads from the broker what waits at the end of a partition held and has waited
  since the last call while no batch came.

Kafka offsets may also skip for good reasons (transaction markers); reading such a hole finds
no record and costs one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.types import StreamT

from streams.app import faust_internals
from streams.app.batch import Handler, Outbox, Record, next_offsets
from streams.app.guarantee.base import Guarantee, PartitionReader

log = logging.getLogger(__name__)

#: How often :meth:`Input.catch_up` looks for records left at a partition's end; one left there is
#: handled within two intervals, at the cost of one offsets request per input and interval.
CATCH_UP_S = 5.0
#: The longest wait between two tries of a batch whose output was not published.
MAX_BACKOFF_S = 30.0


class Input:
    """One agent's input topic: its micro-batches handled by ``work`` in offset order, holes filled (read
    with ``reader``), the output published by ``guarantee`` and the offsets of what was handled committed.

    :meth:`run` is the agent's body. A hole shows when the partition's next record arrives; one at
    the very end of a partition waits for that next record. Records before the next offset to
    handle (delivered again after a rebalance or a hole was read) are skipped: they were handled.
    """

    def __init__(
        self,
        app: faust.App,
        guarantee: Guarantee,
        reader: PartitionReader,
        work: Handler,
        commit_interval_s: float,
        on_hole: Callable[[str, int], None] = lambda topic, count: None,
    ) -> None:
        self.app = app  # for Faust's sensors only
        self.guarantee = guarantee
        self.reader = reader
        self.work = work
        self.on_hole = on_hole
        self.commit_interval_s = commit_interval_s
        self.next: dict[TopicPartition, int] = {}  # the next offset to handle
        self._last_commit = time.monotonic()
        self._commit_lock = asyncio.Lock()
        self._work_lock = asyncio.Lock()  # a batch and a tick never overlap
        self._in_hand: asyncio.Future[None] | None = None  # the batch being handled, if any
        # Per partition, its (next offset to handle, end) at the last catch_up, and an end up to which
        # only offsets without a record (transaction markers) were left.
        self._checked: dict[TopicPartition, tuple[int, int]] = {}
        self._barren: dict[TopicPartition, int] = {}
        self._batches = self._batches_seen = 0  # batches handled, and their number at the last catch_up
        self._stopped = False
        guarantee.when_revoked(self.forget)

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        # A partition that comes back starts from its committed offset, maybe moved on elsewhere.
        for tp in revoked:
            self.next.pop(tp, None)
            self._checked.pop(tp, None)
            self._barren.pop(tp, None)

    async def run(self, stream: StreamT[Any], size: int, within_s: float) -> None:
        """The agent: ``work`` on each micro-batch, then its offsets are committed (every interval).

        A stop (SIGTERM, rebalance) cancels the agent; a batch in hand is finished first, so its
        output and state are complete before the final commit. A stop during an encoder outage
        therefore waits for the encoder (or the orchestrator's SIGKILL, which commits nothing).
        """
        try:
            async for events in faust_internals.take_batches(stream, size, within_s):
                faust_internals.report_in(self.app, events)
                generation = self.guarantee.generation()
                task = self._in_hand = asyncio.ensure_future(
                    self._handle([Record.of_event(ev) for ev in events], generation)
                )
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    await task
                    raise
                await self.commit()
        finally:
            await self.commit(force=True)
            await self.stop()

    async def _handle(self, batch: Sequence[Record], generation: int, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        """Handle ``batch``; the events of a partition whose output was not published (its transaction
        failed, or a rebalance made the batch stale) are handled again while the partition is ours.

        Retrying here rather than reading them back as a hole later matters at a partition's end:
        a hole shows only when a later record arrives, which may never happen.
        """
        async with self._work_lock:
            await self._handle_locked(batch, generation, max_backoff_s)
            self._batches += 1

    async def _handle_locked(self, batch: Sequence[Record], generation: int, max_backoff_s: float) -> None:
        pending = await self.complete(batch)
        delay = min(0.5, max_backoff_s)
        while pending:
            outbox = await self.work(pending)
            offsets = next_offsets(pending)
            done = await self.guarantee.publish(outbox, offsets, generation)
            outbox.published(done)
            for tp in done:
                self.next[tp] = max(self.next.get(tp, 0), offsets[tp])
            failed = offsets.keys() - done
            if not failed:
                return
            # A partition still (or again) ours after a rebalance is handled again here too: Faust does
            # not always deliver again what it delivered once (a partition with no committed offset is
            # not seeked back), and a batch dropped at a partition's end would wait for a later record.
            again = {tp for tp in failed if await self.guarantee.ready(tp)}  # not those taken away
            generation = self.guarantee.generation()
            for tp in again:  # from where its group stands: a newer owner may have moved it on
                self.next.pop(tp, None)
            pending = await self.complete([rec for rec in pending if rec.tp in again])
            if pending:
                log.warning("%d events of %d partitions not published; handling them again in %.1f s",
                            len(pending), len(again), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

    async def complete(self, batch: Sequence[Record]) -> list[Record]:
        """``batch`` with every hole before or inside it read from the broker, in offset order per partition;
        without the records of a partition taken away before the batch came (its new owner handles them)."""
        out: list[Record] = []
        expected = dict(self.next)
        gone: set[TopicPartition] = set()
        for rec in batch:
            tp = rec.tp
            if tp in gone:
                continue
            if tp not in expected:
                if not await self.guarantee.ready(tp):
                    gone.add(tp)  # taken in an earlier generation, handed out after the rebalance
                    continue
                expected[tp] = await self.reader.committed(tp)
            if rec.offset < expected[tp]:
                continue  # handled already
            if rec.offset > expected[tp]:
                out.extend(await self._fill(tp, expected[tp], rec.offset))
            out.append(rec)
            expected[tp] = max(expected[tp], rec.offset + 1)
        return out

    async def tick(self, topic: str, work: Callable[[Mapping[TopicPartition, int]], Awaitable[Outbox]]) -> None:
        """Between batches, work that no new record brings (users waiting for items): ``work`` gets the next
        offset to handle of each partition of ``topic`` held now, and its outbox is published with those
        offsets, unchanged. If it is not published (a rebalance, a failed transaction), nothing of it took
        effect and the next tick does it again."""
        async with self._work_lock:
            generation = self.guarantee.generation()
            offsets = await self._held(topic)
            if not offsets:
                return
            outbox = await work(offsets)
            sources = {m.source for m in outbox.messages} | {tp for tp, _ in outbox.effects}
            if sources:
                done = await self.guarantee.publish(outbox, {tp: offsets[tp] for tp in sources}, generation)
                outbox.published(done)

    async def catch_up(self, topic: str, limit: int) -> None:
        """Handle, read from the broker, the records of each partition of ``topic`` held now that wait at its
        end (under its end offset, the last stable one when reading committed data) and waited there
        since the last call while the input handled no batch: Faust's consumer lost them. (While batches
        come, it may just be busy with other partitions, as with a backlog; and a hole before a later
        record is read when that record comes.) At most ``limit`` records a partition; records Faust
        delivers after all are skipped as handled."""
        async with self._work_lock:
            generation = self.guarantee.generation()
            offsets = await self._held(topic)
            busy, self._batches_seen = self._batches != self._batches_seen, self._batches
            try:  # bounded: batches wait for the lock, and with the broker away the next look asks again
                ends = await asyncio.wait_for(self.reader.end_offsets(list(offsets)), CATCH_UP_S) if offsets else {}
            except (TimeoutError, KafkaError) as exc:
                log.info("%s: no end offsets (%r); looking again in %.0f s", topic, exc, CATCH_UP_S)
                return
            batch: list[Record] = []
            for tp, start in offsets.items():
                end = ends[tp]
                last, self._checked[tp] = self._checked.get(tp), (start, end)
                if busy or start >= end or last != (start, end) or self._barren.get(tp) == end:
                    continue  # batches came, or nothing waits, or it came since the last call, or only markers
                got = await self._fill(tp, start, end, limit)
                if got:
                    batch += got
                else:
                    self._barren[tp] = end
            if batch:
                await self._handle_locked(batch, generation, MAX_BACKOFF_S)
        await self.commit()

    async def _held(self, topic: str) -> dict[TopicPartition, int]:
        """The next offset to handle of each partition of ``topic`` held now: where the last batch left it,
        else (none handled since it was assigned) where its group stands, once the guarantee is ready; none
        once the agent has stopped."""
        offsets: dict[TopicPartition, int] = {}
        if self._stopped:
            return offsets
        for tp in sorted(self.guarantee.assignment()):
            if tp.topic != topic:
                continue
            if tp not in self.next:
                if not await self.guarantee.ready(tp):
                    continue
                self.next[tp] = await self.reader.committed(tp)
            offsets[tp] = self.next[tp]
        return offsets

    async def commit(self, *, force: bool = False) -> None:
        """Commit what was handled since the last commit: when the interval passed, or now if ``force``
        (the guarantee commits only what :meth:`Guarantee.publish` did not)."""
        if not force and time.monotonic() - self._last_commit < self.commit_interval_s:
            return
        async with self._commit_lock:
            self._last_commit = time.monotonic()
            await self.guarantee.commit(self.next)

    async def drain(self) -> None:
        """Finish the batch in hand and commit what was handled: at a stop, before the consumer leaves the
        group (Faust stops it before the agents' own cleanup has run, and a partition no longer assigned
        is not committed)."""
        if self._in_hand is not None and not self._in_hand.done():
            await asyncio.wait([self._in_hand])
        async with self._work_lock:  # a tick in hand finishes too
            await self.commit(force=True)

    async def stop(self) -> None:
        self._stopped = True  # a timer's tick or catch_up after the agent ended would start the reader again
        await self.reader.stop()

    async def _fill(self, tp: TopicPartition, start: int, end: int, limit: int | None = None) -> list[Record]:
        """The records at offsets ``start`` to ``end - 1`` of ``tp`` (the first ``limit``), read from the broker."""
        got = await self.reader.read(tp, start, end, limit)
        if got:
            log.warning("%s[%d]: offsets %d-%d were not delivered; read %d records from the broker",
                        tp.topic, tp.partition, start, got[-1].offset, len(got))
            self.on_hole(tp.topic, len(got))
        return got
