"""The events agent's batch: each event folded into its user's state and answered with one list.

:class:`EventsHandler` is the business logic of a micro-batch, with its collaborators injected: the
user-state store, the recommender, the dead letters, the metrics and list probe, the catalog loader
(its readiness and lock) and the topics it writes. It returns the batch's :class:`Outbox`; publishing
it is the guarantee's business.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
from aiokafka import TopicPartition

from streams.app.batch import Outbox, Record
from streams.app.catalog import CatalogLoader
from streams.app.dead_letters import DeadLetters, ProcessingError
from streams.app.guarantee.states import UserStates
from streams.app.stamps import Unstamped, stamp, unstamp
from streams.contracts import DecodeError, Event, check_event_time, decode_event, encode
from streams.learning import Lessons
from streams.learning.lessons import to_record
from streams.metrics import ListProbe, Metrics
from streams.recommender import BatchResult

log = logging.getLogger(__name__)


class Recommends(Protocol):
    """What the handler needs of :class:`~streams.recommender.Recommender`."""

    def process(self, events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult: ...


def parse_event(msg: Record, catalog: Container[str]) -> Event:
    """Decode an ``events`` message and check it can be used; :class:`DecodeError` otherwise."""
    event = check_event_time(decode_event(msg.value))
    if msg.key != event.user_id.encode():
        # State is partitioned by user: an event keyed otherwise would land beside the wrong state.
        raise DecodeError("key_mismatch", "message key must be the event's user_id")
    if event.item_id not in catalog:
        raise DecodeError("unknown_item", f"item {event.item_id!r} is not in the catalog")
    return event


@dataclass
class Taken:
    """A batch's usable events that were not applied before, and what the handler needs to answer them."""

    good: list[tuple[bytes, Event]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the messages of `good`
    last: dict[bytes, Record] = field(default_factory=dict)  # per user: the newest event of this batch
    applied: dict[bytes, int] = field(default_factory=dict)  # per user: the offset its state was stamped with
    replayed: int = 0
    items_read: bool = False  # whether the items topic was read to its end for this batch


class EventsHandler:
    """One micro-batch: its lists, dead letters and the user states stamped with their offsets."""

    def __init__(
        self,
        recommender: Recommends,
        states: UserStates,
        loader: CatalogLoader,
        dead_letters: DeadLetters,
        metrics: Metrics,
        probe: ListProbe,
        recommendations_topic: str,
        changelog_topic: str,
        lessons_topic: str | None = None,
        models_ready: asyncio.Event | None = None,
        own_lessons: Callable[[int, int, Lessons], None] | None = None,
    ) -> None:
        self.recommender = recommender
        self.states = states
        self.loader = loader
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.probe = probe
        self.recommendations_topic = recommendations_topic
        self.changelog_topic = changelog_topic
        #: Where a serving-only worker sends what each batch teaches the shared models (None: it learns itself).
        self.lessons_topic = lessons_topic
        #: Set once the newest snapshot of the shared models is loaded (a serving-only worker waits for it).
        self.models_ready = models_ready
        #: Told of each lessons record once published (a serving worker keeps them until a snapshot has them).
        self.own_lessons = own_lessons

    async def __call__(self, batch: Sequence[Record]) -> Outbox:
        await self.loader.ready.wait()
        if self.models_ready is not None:
            await self.models_ready.wait()
        out = Outbox()
        taken = await self.take(batch, out)
        if taken.replayed:
            self.metrics.events_replayed(taken.replayed)
        result = await self.process(taken, out)
        self.answer(taken, result, out)
        return out

    async def take(self, batch: Sequence[Record], out: Outbox) -> Taken:
        """The batch's events to apply; the unusable ones dead-lettered, the replayed ones counted."""
        taken = Taken()
        for rec in batch:
            try:
                event = await self.parse(rec, taken)
            except DecodeError as err:
                self.dead_letters.add(out, rec, err)
                continue
            key = cast(bytes, rec.key)
            if key not in taken.applied:
                taken.applied[key] = unstamp(self.states.get(key))[0]
            if rec.offset <= taken.applied[key]:
                taken.replayed += 1  # applied (and its list delivered) before a restart
                continue
            taken.applied[key] = rec.offset
            taken.last[key] = rec
            taken.good.append((key, event))
            taken.records.append(rec)
        return taken

    async def parse(self, rec: Record, taken: Taken) -> Event:
        """:func:`parse_event`; before the first item of a batch is refused as unknown, the items topic is
        read up to its end, since an item produced just before its event may not have been read yet."""
        try:
            return parse_event(rec, self.loader.catalog)
        except DecodeError as err:
            if err.reason != "unknown_item" or taken.items_read:
                raise
        taken.items_read = True
        await self.loader.read_items_to_end()
        return parse_event(rec, self.loader.catalog)

    async def process(self, taken: Taken, out: Outbox) -> BatchResult:
        """The recommender's result for ``taken``; if it fails, its events are dead-lettered (and
        ``taken`` emptied) instead of dropped."""
        if not taken.good:
            return BatchResult([], {}, [], [])
        # The recommender's work is CPU-bound: run it off the event loop, which meanwhile keeps
        # fetching, heartbeating and sending. It reads the whole table (learning from expired
        # impressions reads other users' states too) and returns the new states, which the table
        # (whose changelog producer belongs to the loop) takes on the loop.
        try:
            async with self.loader.lock:
                return await asyncio.to_thread(self.recommender.process, taken.good, Unstamped(self.states))
        except Exception as exc:  # a bug must not drop the batch: its events go to the DLQ instead
            log.exception("recommender failed on a batch of %d events", len(taken.good))
            error = ProcessingError(exc)
            for rec in taken.records:
                self.dead_letters.add(out, rec, error)
            taken.good, taken.records = [], []
            return BatchResult([], {}, [], [])

    def answer(self, taken: Taken, result: BatchResult, out: Outbox) -> None:
        """The lists, then the new states, into ``out``; the probes once each partition is published."""
        # Dead letters and lists first, then the states stamped with these offsets (see
        # streams.app.stamps): at-least-once delivers them in this order, each acknowledged, before
        # the offsets may be committed; exactly-once commits them with the offsets. The changelog is
        # written here rather than through the Faust table (`table[key] = ...` only queues it in
        # Faust's producer buffer, where a commit right after the batch could overtake it).
        good, records = taken.good, taken.records
        recs, traces, rewards = result.lists, result.traces, result.rewards
        for rec, recommendation in zip(records, recs, strict=True):
            out.add(rec.tp, self.recommendations_topic, rec.key, encode(recommendation))
        for key, value in result.states.items():
            source, state = taken.last[key].tp, stamp(taken.applied[key], value)
            out.add(source, self.changelog_topic, key, state)
            out.after(source, functools.partial(self.states.put, source.partition, key, state))
        if result.dropped_updates and records:
            out.after(records[0].tp, functools.partial(self.metrics.interest_updates_dropped, result.dropped_updates))
        by_tp: dict[TopicPartition, list[int]] = {}
        for i, rec in enumerate(records):
            by_tp.setdefault(rec.tp, []).append(i)
        for n, (tp, mine) in enumerate(by_tp.items()):
            if self.lessons_topic and result.lessons is not None:  # one record per partition: its transaction's
                lessons, next_offset = result.lessons.take(np.array(mine)), records[mine[-1]].offset + 1
                value = to_record(lessons, tp.partition, next_offset)
                out.add(tp, self.lessons_topic, str(tp.partition).encode(), value)
                if self.own_lessons is not None:
                    out.after(tp, functools.partial(self.own_lessons, tp.partition, next_offset, lessons))
            events, stamps = [good[i][1] for i in mine], [records[i].timestamp for i in mine]
            made = ([recs[i] for i in mine], [traces[i] for i in mine], rewards if n == 0 else [])
            out.after(tp, functools.partial(self.probe.published, events, stamps, *made))
