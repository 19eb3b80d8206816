"""The events agent's batch: each event folded into its user's state and answered with one list.

:class:`EventsHandler` is the business logic of a micro-batch, with its collaborators injected: the
user-state store, the recommender, the dead letters, the metrics and list probe, the catalog loader
(its readiness and lock) and the topics it writes. It returns the batch's :class:`Outbox`; publishing
it is the guarantee's business.

An event whose item is not on the items topic yet is parked in its user's state (see
:mod:`streams.app.waiting`); :meth:`EventsHandler.wake`, called between batches, handles it once its
item is there, or dead-letters it as ``unknown_item`` after the timeout, and folds in the held interest
updates whose item got its vector.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from aiokafka import TopicPartition

from streams.app.batch import Outbox, Record
from streams.app.catalog import CatalogLoader
from streams.app.dead_letters import DeadLetters, ProcessingError
from streams.app.guarantee.states import UserStates
from streams.app.stamps import Parked, Stamped, Unstamped, unstamp
from streams.app.waiting import Waiting
from streams.contracts import DecodeError, Event, check_event_time, decode_event, encode
from streams.learning import Lessons
from streams.learning.lessons import to_records
from streams.metrics import ListProbe, Metrics
from streams.recommender import BatchResult

log = logging.getLogger(__name__)


class Recommends(Protocol):
    """What the handler needs of :class:`~streams.recommender.Recommender`."""

    def process(self, events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult: ...

    def held_items(self, state: bytes) -> list[str]: ...

    def fold(self, keys: Iterable[bytes], store: Mapping[bytes, bytes]) -> dict[bytes, bytes]: ...


#: Events parked per user; a newer one sends the oldest to the dead-letter topic.
MAX_PARKED_PER_USER = 32


class UnknownItem(DecodeError):
    """A usable event whose item is not in the catalog (yet)."""

    def __init__(self, event: Event) -> None:
        super().__init__("unknown_item", f"item {event.item_id!r} is not in the catalog")
        self.event = event


def parse_event(msg: Record, catalog: Container[str]) -> Event:
    """Decode an ``events`` message and check it can be used; :class:`DecodeError` otherwise."""
    event = check_event_time(decode_event(msg.value))
    if msg.key != event.user_id.encode():
        # State is partitioned by user: an event keyed otherwise would land beside the wrong state.
        raise DecodeError("key_mismatch", "message key must be the event's user_id")
    if event.item_id not in catalog:
        raise UnknownItem(event)
    return event


@dataclass
class Taken:
    """A batch's usable events that were not applied before, and what the handler needs to answer them."""

    good: list[tuple[bytes, Event]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the messages of `good`
    sources: dict[bytes, TopicPartition] = field(default_factory=dict)  # per user: its events partition
    applied: dict[bytes, int] = field(default_factory=dict)  # per user: the offset its state was stamped with
    parked: dict[bytes, list[Parked]] = field(default_factory=dict)  # per user whose parked events changed: all
    #: Per partition, the offset the batch's lessons cover up to (default: after its last event).
    covers: dict[TopicPartition, int] = field(default_factory=dict)
    replayed: int = 0
    newly_parked: int = 0
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
        *,
        waiting: Waiting | None = None,
        timeout_s: float = 3600.0,
        max_parked: int = 100_000,
        clock: Callable[[], float] = time.time,
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
        #: The users waiting for items; an event parks for ``timeout_s`` at most, ``max_parked`` of them at once.
        self.waiting = waiting if waiting is not None else Waiting(recommender.held_items)
        self.timeout_s = timeout_s
        self.max_parked = max_parked
        self.clock = clock

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
            except UnknownItem as err:
                if not self.park(rec, err.event.item_id, taken, out):
                    self.dead_letters.add(out, rec, err)
                continue
            except DecodeError as err:
                self.dead_letters.add(out, rec, err)
                continue
            key = cast(bytes, rec.key)
            if self.replayed(key, rec, taken):
                continue
            taken.good.append((key, event))
            taken.records.append(rec)
        return taken

    def replayed(self, key: bytes, rec: Record, taken: Taken) -> bool:
        """Whether ``rec`` was applied (or parked) before a restart; else it is the user's newest in ``taken``."""
        if key not in taken.applied:
            taken.applied[key] = unstamp(self.states.get(key))[0]
        if rec.offset <= taken.applied[key]:
            taken.replayed += 1  # its list was delivered (or it waits in the state) before a restart
            return True
        taken.applied[key] = rec.offset
        taken.sources[key] = rec.tp
        return False

    def park(self, rec: Record, item_id: str, taken: Taken, out: Outbox) -> bool:
        """Park ``rec``, an event for an item not on the items topic yet, in its user's state; False when
        :attr:`max_parked` events wait already (it is dead-lettered at once)."""
        key = cast(bytes, rec.key)
        if self.replayed(key, rec, taken):
            return True
        if self.waiting.events() + taken.newly_parked >= self.max_parked:
            return False
        parked = taken.parked.get(key)
        if parked is None:
            parked = taken.parked[key] = list(Stamped.of(self.states.get(key)).parked)
        parked.append(Parked(rec.offset, rec.timestamp, self.clock(), item_id, cast(bytes, rec.value)))
        taken.newly_parked += 1
        if len(parked) > MAX_PARKED_PER_USER:
            oldest = parked.pop(0)
            detail = f"item {oldest.item_id!r} is not in the catalog, and {MAX_PARKED_PER_USER} newer events wait"
            self.dead_letters.add(out, self.unparked(rec.tp, key, oldest), DecodeError("unknown_item", detail))
        return True

    @staticmethod
    def unparked(tp: TopicPartition, key: bytes, parked: Parked) -> Record:
        """The message a parked event was read as."""
        return Record(tp.topic, tp.partition, parked.offset, key, parked.value, parked.timestamp)

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
        """The lists, the lessons, then the new states, into ``out``; the probes once each partition is published."""
        # Dead letters and lists first, then what the batch teaches the learner, then the states stamped
        # with these offsets (see streams.app.stamps): at-least-once delivers them in this order, each
        # acknowledged, before the offsets may be committed, so a crash before the states were written
        # replays the batch (its lists and lessons again) and a crash after has lost nothing; exactly-once
        # commits them with the offsets. The changelog is written here rather than through the Faust table
        # (`table[key] = ...` only queues it in Faust's producer buffer, where a commit right after the
        # batch could overtake it).
        good, records = taken.good, taken.records
        recs, traces, rewards = result.lists, result.traces, result.rewards
        for rec, recommendation in zip(records, recs, strict=True):
            out.add(rec.tp, self.recommendations_topic, rec.key, encode(recommendation))
        by_tp: dict[TopicPartition, list[int]] = {}
        for i, rec in enumerate(records):
            by_tp.setdefault(rec.tp, []).append(i)
        if self.lessons_topic and result.lessons is not None:
            for tp, mine in by_tp.items():  # per partition, in its transaction: one record, or more if large
                covers = taken.covers.get(tp, records[mine[-1]].offset + 1)
                offsets = [records[i].offset for i in mine]
                for next_offset, lessons, value in to_records(result.lessons, mine, offsets, tp.partition, covers):
                    out.add(tp, self.lessons_topic, str(tp.partition).encode(), value)
                    if self.own_lessons is not None:  # before it is sent: read back, it must be known as learned
                        self.own_lessons(tp.partition, next_offset, lessons)
        for key in [*result.states, *(key for key in taken.parked if key not in result.states)]:
            self.write_state(out, taken.sources[key], key, taken.applied[key], result.states.get(key),
                             taken.parked.get(key))
        if result.dropped_updates and records:
            out.after(records[0].tp, functools.partial(self.metrics.interest_updates_dropped, result.dropped_updates))
        for n, (tp, mine) in enumerate(by_tp.items()):
            events, stamps = [good[i][1] for i in mine], [records[i].timestamp for i in mine]
            made = ([recs[i] for i in mine], [traces[i] for i in mine], rewards if n == 0 else [])
            out.after(tp, functools.partial(self.probe.published, events, stamps, *made))

    def write_state(
        self, out: Outbox, source: TopicPartition, key: bytes, offset: int, state: bytes | None,
        parked: list[Parked] | None,
    ) -> None:
        """Write ``key``'s stamped state (``None``: the stored one) with its parked events (``None``: the
        stored ones); the partition is kept while the user waits for items."""
        if state is None or parked is None:
            stored = Stamped.of(self.states.get(key))
            state = state if state is not None else stored.state
            parked = parked if parked is not None else stored.parked
        held = self.recommender.held_items(state) if state else []
        value = Stamped(offset, state, source.partition if parked or held else -1, parked).to_bytes()
        out.add(source, self.changelog_topic, key, value)
        out.after(source, functools.partial(self.stored, source.partition, key, value))

    def stored(self, partition: int, key: bytes, value: bytes) -> None:
        self.states.put(partition, key, value)
        self.waiting.note(key, value)

    async def wake(self, offsets: Mapping[TopicPartition, int]) -> Outbox:
        """Between batches, for the waiting users of the partitions in ``offsets`` (the next offset of each):
        their parked events whose item is on the items topic now, handled in the order they came (each
        gets its list); those parked longer than :attr:`timeout_s`, dead-lettered as ``unknown_item``; their
        held interest updates whose item has its vector now, folded in."""
        out = Outbox()
        by_partition = {tp.partition: tp for tp in offsets}
        catalog, now = self.loader.catalog, self.clock()
        due = self.waiting.due(by_partition, catalog.__contains__, lambda item: catalog.vector(item) is not None,
                               now - self.timeout_s)
        if not due:
            return out
        if self.models_ready is not None:
            await self.models_ready.wait()
        taken = Taken(covers=dict(offsets))
        for key in due:
            stored = Stamped.of(self.states.get(key))
            tp = by_partition[stored.partition]
            taken.sources[key], taken.applied[key], taken.parked[key] = tp, stored.offset, []
            for parked in stored.parked:
                rec = self.unparked(tp, key, parked)
                if parked.item_id in catalog:
                    try:
                        taken.good.append((key, parse_event(rec, catalog)))
                        taken.records.append(rec)
                    except DecodeError as err:
                        self.dead_letters.add(out, rec, err)
                elif parked.parked_at < now - self.timeout_s:
                    detail = f"item {parked.item_id!r} was not on the items topic within {self.timeout_s:g} s"
                    self.dead_letters.add(out, rec, DecodeError("unknown_item", detail))
                else:
                    taken.parked[key].append(parked)
        result = await self.process(taken, out)
        with_events = {key for key, _ in taken.good}
        fold = [key for key in due if key not in with_events]  # the others fold as their events are handled
        if fold:
            async with self.loader.lock:
                result.states.update(await asyncio.to_thread(self.recommender.fold, fold, Unstamped(self.states)))
        self.answer(taken, result, out)
        return out
