"""The agents' batch logic with in-memory fakes: replays skipped, states stamped, bad input and a failing
recommender dead-lettered, probes and metrics only once a partition is published."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from streams.app.batch import Outbox, Record
from streams.app.catalog import CatalogLoader
from streams.app.dead_letters import DeadLetters
from streams.app.events import MAX_PARKED_PER_USER, EventsHandler
from streams.app.items import ItemsHandler
from streams.app.stamps import Stamped, stamp, unstamp
from streams.contracts import Event, Item, Recommendation, vector_of
from streams.learning import Lessons
from streams.learning.lessons import from_record
from streams.learning.snapshot import MAX_CHUNK_BYTES
from streams.metrics import Metrics
from streams.recommender import BatchResult, ListTrace
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from streams.testing import HoldsNothing, PartitionedStates, event_record, record

P0, P1 = TopicPartition("events", 0), TopicPartition("events", 1)
NOW = time.time()


class FakeRecommender(HoldsNothing):
    """Answers each event with an empty list and the state ``S-<user>-<n events so far>``; or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[list[tuple[bytes, str]]] = []

    def process(self, events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        if self.fail:
            raise ValueError("boom")
        self.seen.append([(key, ev.event_id) for key, ev in events])
        lists = [Recommendation(user_id=ev.user_id, event_id=ev.event_id, generated_at=0, policy="p", items=[])
                 for _, ev in events]
        counts = Counter(key for key, _ in events)
        new = {key: f"S-{key.decode()}-{n}".encode() for key, n in counts.items()}
        traces = [ListTrace("p", "relevance", Counter(), 0.0) for _ in events]
        return BatchResult(lists, new, traces, [])


class FakeProbe:  # a ListProbe that only records its calls
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def published(self, events: Sequence[Event], produced_at: Sequence[float], recs: Sequence[Recommendation],
                  traces: Sequence[ListTrace], rewards: Sequence[Any] = ()) -> None:
        self.calls.append(([e.event_id for e in events], len(recs)))


class Rig:
    def __init__(self, fail: bool = False, **handler: Any) -> None:
        catalog = Catalog(2)
        catalog.upsert([CatalogItem("i1", "One"), CatalogItem("i2", "Two")], np.eye(2, dtype=np.float32))
        self.loader = CatalogLoader(Settings(), catalog)
        self.loader.ready.set()
        self.states = PartitionedStates()
        self.metrics = Metrics()
        self.probe = FakeProbe()
        self.recommender = FakeRecommender(fail)
        self.handler = EventsHandler(self.recommender, self.states, self.loader, DeadLetters("dlq", self.metrics),
                                     self.metrics, self.probe, "recs", "changelog", **handler)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def topics(out: Outbox) -> list[tuple[int, str, bytes | None]]:
    return [(m.source.partition, m.topic, m.key) for m in out.messages]


async def test_lists_then_states_stamped_with_the_last_offset_applied_once_published() -> None:
    rig = Rig()
    batch = [event_record(P0, 3, "u1", "i1", NOW), event_record(P1, 0, "u2", "i2", NOW),
             event_record(P0, 4, "u1", "i2", NOW)]
    out = await rig.handler(batch)
    assert topics(out) == [(0, "recs", b"u1"), (1, "recs", b"u2"), (0, "recs", b"u1"),
                           (0, "changelog", b"u1"), (1, "changelog", b"u2")]
    changelog = {m.key: m.value for m in out.messages if m.topic == "changelog"}
    assert changelog == {b"u1": stamp(4, b"S-u1-2"), b"u2": stamp(0, b"S-u2-1")}
    assert len(rig.states) == 0 and rig.probe.calls == []  # nothing local before the output is out
    out.published({P0})
    assert dict(rig.states) == {b"u1": stamp(4, b"S-u1-2")}
    assert rig.probe.calls == [(["e3", "e4"], 2)]
    out.published({P1})
    assert unstamp(rig.states[b"u2"]) == (0, b"S-u2-1") and len(rig.probe.calls) == 2


async def test_events_at_or_below_the_stamped_offset_are_skipped_as_replays() -> None:
    rig = Rig()
    rig.states.put(0, b"u1", stamp(5, b"S-u1-old"))
    out = await rig.handler([event_record(P0, o, "u1", "i1", NOW) for o in (4, 5, 6)])
    assert rig.recommender.seen == [[(b"u1", "e6")]]
    assert [m.topic for m in out.messages] == ["recs", "changelog"]
    assert rig.sample("streamrec_events_replayed_total") == 2


async def test_unusable_events_are_dead_lettered_with_their_reason() -> None:
    rig = Rig()
    bad = [record(P0, 0, key=b"u1", value=b"{not json"), record(P0, 1, key=b"u1", value=b'{"event_id": 1}'),
           event_record(P0, 2, "u1", "i1", NOW)]
    out = await rig.handler(bad)
    dead = [json.loads(m.value) for m in out.messages if m.topic == "dlq"]
    assert [(d["offset"], d["reason"]) for d in dead] == [(0, "invalid_json"), (1, "schema")]
    assert rig.recommender.seen == [[(b"u1", "e2")]]
    assert rig.sample("streamrec_dead_letters_total", reason="schema") == 0  # counted once published
    out.published({P0})
    assert rig.sample("streamrec_dead_letters_total", reason="schema") == 1


async def test_a_failing_recommender_dead_letters_its_events_and_writes_no_state() -> None:
    rig = Rig(fail=True)
    out = await rig.handler([event_record(P0, 0, "u1", "i1", NOW), event_record(P1, 0, "u2", "i2", NOW)])
    dead = [json.loads(m.value) for m in out.messages]
    assert [(d["partition"], d["reason"], d["detail"]) for d in dead] == [
        (0, "processing_error", "ValueError: boom"), (1, "processing_error", "ValueError: boom")]
    assert all(m.topic == "dlq" for m in out.messages)
    out.published({P0, P1})
    assert len(rig.states) == 0 and rig.probe.calls == []
    assert rig.sample("streamrec_dead_letters_total", reason="processing_error") == 2


class FakeEncoder:
    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.full((len(texts), 3), 0.5, dtype=np.float32)

    async def close(self) -> None:
        return None


async def test_items_are_embedded_to_the_vectors_topic_and_bad_ones_dead_lettered() -> None:
    items = TopicPartition("items", 0)
    good = Item(item_id="i1", title="One", created_at=NOW).model_dump_json().encode()
    handler = ItemsHandler(lambda: FakeEncoder(), DeadLetters("dlq", Metrics()), "items-vectors")  # type: ignore[arg-type,return-value]
    out = await handler([Record("items", 0, 0, b"i1", good, 0.0), Record("items", 0, 1, b"x", b"", 0.0)])
    assert [(m.source, m.topic, m.key) for m in out.messages] == [(items, "dlq", b"x"), (items, "items-vectors", b"i1")]
    vector = json.loads(out.messages[1].value)["vector_b64"]
    assert vector_of(vector).tolist() == [0.5, 0.5, 0.5]


async def test_dropped_interest_updates_are_counted_once_published() -> None:
    rig = Rig()
    process = rig.recommender.process

    def dropping(events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        return dataclasses.replace(process(events, states), dropped_updates=Counter(timeout=2))

    rig.recommender.process = dropping  # type: ignore[method-assign]
    out = await rig.handler([event_record(P0, 0, "u1", "i1", NOW)])
    assert rig.sample("streamrec_interest_updates_dropped_total", reason="timeout") == 0
    out.published({P0})
    assert rig.sample("streamrec_interest_updates_dropped_total", reason="timeout") == 2


# --- events for items not on the items topic yet: parked, woken, timed out -----------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def dead_of(out: Outbox) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in out.messages if m.topic == "dlq" and m.value is not None]


async def test_an_event_for_an_item_not_on_the_items_topic_waits_in_its_users_state_and_is_handled_once_it_is() -> None:
    clock = Clock()
    rig = Rig(clock=clock, timeout_s=60.0)
    late = event_record(P0, 7, "u1", "late", NOW)
    out = await rig.handler([event_record(P0, 6, "u1", "i1", NOW), late])
    assert dead_of(out) == [] and rig.recommender.seen == [[(b"u1", "e6")]]
    out.published({P0})
    stored = Stamped.of(rig.states[b"u1"])
    assert (stored.offset, stored.state, stored.partition) == (7, b"S-u1-1", 0), "stamped past it, with its partition"
    assert [(p.offset, p.item_id, p.value, p.parked_at) for p in stored.parked] == [(7, "late", late.value, 1_000.0)]
    assert rig.handler.waiting.events() == 1
    assert (await rig.handler([late])).messages == [] and rig.sample("streamrec_events_replayed_total") == 1

    assert (await rig.handler.wake({P0: 8})).messages == [], "nothing to do while its item is away"
    rig.loader.catalog.announce([CatalogItem("late", "Late")])  # on the items topic now (no vector yet)
    out = await rig.handler.wake({P0: 8, P1: 0})
    assert topics(out) == [(0, "recs", b"u1"), (0, "changelog", b"u1")] and rig.recommender.seen[-1] == [(b"u1", "e7")]
    out.published({P0})
    assert Stamped.of(rig.states[b"u1"]) == Stamped(7, b"S-u1-1"), "handled once: no longer waiting"
    assert rig.handler.waiting.events() == 0 and rig.probe.calls[-1] == (["e7"], 1)


async def test_a_parked_event_whose_item_never_comes_is_dead_lettered_with_its_bytes_after_the_timeout() -> None:
    clock = Clock()
    rig = Rig(clock=clock, timeout_s=60.0)
    late = event_record(P1, 3, "u2", "never", NOW)
    (await rig.handler([late])).published({P1})
    assert Stamped.of(rig.states[b"u2"]).state is None, "a user with a parked event only has no state yet"
    clock.now += 59.0
    assert (await rig.handler.wake({P1: 4})).messages == []
    clock.now += 2.0
    out = await rig.handler.wake({P1: 4})
    [dead] = dead_of(out)
    assert (dead["reason"], dead["offset"], dead["partition"]) == ("unknown_item", 3, 1)
    assert base64.b64decode(dead["original_b64"]) == late.value and "within 60 s" in dead["detail"]
    out.published({P1})
    assert Stamped.of(rig.states[b"u2"]) == Stamped(3, None) and rig.handler.waiting.events() == 0
    assert rig.sample("streamrec_dead_letters_total", reason="unknown_item") == 1


async def test_parked_events_are_bounded_per_user_and_per_worker() -> None:
    rig = Rig(max_parked=MAX_PARKED_PER_USER + 1)
    batch = [event_record(P0, n, "u1", f"away-{n}", NOW) for n in range(MAX_PARKED_PER_USER + 1)]
    out = await rig.handler(batch)
    assert [(d["offset"], d["reason"]) for d in dead_of(out)] == [(0, "unknown_item")], "the user's oldest went"
    out.published({P0})
    assert [p.offset for p in Stamped.of(rig.states[b"u1"]).parked] == list(range(1, MAX_PARKED_PER_USER + 1))
    out = await rig.handler([event_record(P1, 0, "u2", "away", NOW), event_record(P1, 1, "u3", "away", NOW)])
    assert [(d["offset"], d["reason"]) for d in dead_of(out)] == [(1, "unknown_item")], "the worker's bound"


class HoldingRecommender(FakeRecommender):
    """Holds the interest update of every event on ``held`` until :meth:`fold`."""

    def held_items(self, state: bytes) -> list[str]:
        return ["held"] if state.endswith(b"+held") else []

    def fold(self, keys: Iterable[bytes], store: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        return {key: store[key].removesuffix(b"+held") + b"+folded" for key in keys}

    def process(self, events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        result = super().process(events, states)
        result.states.update({k: v + b"+held" for k, v in result.states.items()})
        return result


async def test_held_interest_updates_are_folded_in_once_their_items_vector_arrives() -> None:
    rig = Rig()
    rig.handler.recommender = rig.recommender = HoldingRecommender()
    rig.handler.waiting.held_items = rig.recommender.held_items
    rig.loader.catalog.announce([CatalogItem("held", "Held")])
    (await rig.handler([event_record(P1, 0, "u1", "held", NOW)])).published({P1})
    assert Stamped.of(rig.states[b"u1"]).partition == 1, "kept: the user waits for a vector"
    assert (await rig.handler.wake({P0: 0, P1: 1})).messages == []
    rig.loader.catalog.upsert([CatalogItem("held", "Held")], np.ones((1, 2), np.float32))
    out = await rig.handler.wake({P0: 0, P1: 1})
    assert topics(out) == [(1, "changelog", b"u1")], "no list: folding is not an event"
    out.published({P1})
    assert Stamped.of(rig.states[b"u1"]) == Stamped(0, b"S-u1-1+folded")


async def test_a_batchs_lessons_go_out_before_its_states() -> None:
    # At-least-once delivers topic by topic: a crash after the states were written must find the lessons out.
    rig = Rig(lessons_topic="learning")
    process = rig.recommender.process

    def teaching(events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        lessons = Lessons.build([(0, e.user_id, e.item_id, 1.0, []) for _, e in events],
                                np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), bool), [], [], [])
        return dataclasses.replace(process(events, states), lessons=lessons)

    rig.recommender.process = teaching  # type: ignore[method-assign]
    out = await rig.handler([event_record(P0, 0, "u1", "i1", NOW), event_record(P1, 0, "u2", "i2", NOW)])
    assert [topic for topic, _ in out.by_topic()] == ["recs", "learning", "changelog"]


async def test_a_batchs_lessons_too_large_for_one_record_go_out_in_several_that_cover_it_all() -> None:
    rig = Rig(lessons_topic="learning")
    process = rig.recommender.process
    recent = [f"item-{n:06d}" for n in range(10_000)]  # 440 KB of recent items per engagement

    def teaching(events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        lessons = Lessons.build([(b, e.user_id, e.item_id, 1.0, recent) for b, (_, e) in enumerate(events)],
                                np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), bool), [], [], [])
        return dataclasses.replace(process(events, states), lessons=lessons)

    rig.recommender.process = teaching  # type: ignore[method-assign]
    owned: list[tuple[int, int, int]] = []
    rig.handler.own_lessons = lambda partition, next_offset, lessons: owned.append(
        (partition, next_offset, len(lessons.users)))
    batch = [event_record(P0, offset, f"u{offset}", "i1", NOW) for offset in range(5)]
    out = await rig.handler(batch)
    values = [m.value for m in out.messages if m.topic == "learning"]
    assert len(values) == 3 and all(len(v) <= MAX_CHUNK_BYTES for v in values)
    read = [from_record(v) for v in values]
    assert [(p, n, len(mine.users)) for p, n, mine in read] == owned == [(0, 2, 2), (0, 3, 1), (0, 5, 2)]
    assert [u for *_, mine in read for u in mine.users.tolist()] == [f"u{offset}" for offset in range(5)]
