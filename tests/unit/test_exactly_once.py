"""Exactly-once output: each input partition's messages and next offset go in one transaction, and
nothing of a stale or failed batch is committed (the producers are fakes; the logic is ExactlyOnce's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from streams.app.batch import Outbox
from streams.app.guarantee import ExactlyOnce
from streams.security import KafkaConnection
from streams.testing import FakeApp

P0, P1 = TopicPartition("events", 0), TopicPartition("events", 1)
ITEMS = TopicPartition("items", 0)


class FakeProducer:
    def __init__(self, txn_id: str, fail: list[type[Exception]]) -> None:
        self.txn_id, self.fail = txn_id, fail
        self.started = self.stopped = False
        self.committed: list[tuple[list[tuple[str, bytes | None, bytes]], dict[TopicPartition, int], str]] = []
        self.aborted = 0

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._sent: list[tuple[str, bytes | None, bytes]] = []
        self._offsets: tuple[dict[TopicPartition, int], str] | None = None
        try:
            yield
            if self.fail:
                raise self.fail.pop(0)("commit failed")
        except Exception:
            self.aborted += 1
            raise
        assert self._offsets is not None, "a transaction without its offsets"
        self.committed.append((self._sent, *self._offsets))

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        self._sent.append((topic, key, value))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self._offsets = (dict(offsets), group_id)


class World:
    """A fake app and its producers, one per transactional id started (restarts included)."""

    def __init__(self) -> None:
        self.app: Any = FakeApp(generation=1)
        self.producers: list[FakeProducer] = []
        self.fail: dict[str, list[type[Exception]]] = {}
        kafka = KafkaConnection(bootstrap="unused:9092")
        self.txns = ExactlyOnce(self.app, kafka, {"events"}, producer_factory=self.new_producer)

    def new_producer(self, txn_id: str) -> Any:
        producer = FakeProducer(txn_id, self.fail.setdefault(txn_id, []))
        self.producers.append(producer)
        return producer

    async def assign(self, *tps: TopicPartition) -> None:
        await self.app.assign(*tps)

    async def revoke(self, *tps: TopicPartition) -> None:
        await self.app.revoke(*tps)

    def live(self, txn_id: str) -> FakeProducer:
        (producer,) = [p for p in self.producers if p.txn_id == txn_id and not p.stopped]
        return producer


def outbox(effects: list[str]) -> Outbox:
    box = Outbox()
    box.add(P0, "lists", b"u1", b"L1")
    box.add(P1, "dead", None, b"D1")
    box.add(P0, "state", b"u1", b"S1")
    box.after(P0, lambda: effects.append("P0"))
    box.after(P1, lambda: effects.append("P1"))
    return box


async def test_each_partition_commits_its_messages_with_its_offset() -> None:
    world = World()
    await world.assign(P0, P1, ITEMS)
    assert sorted(p.txn_id for p in world.producers) == ["grp-events-0", "grp-events-1"]  # items not ours
    effects: list[str] = []
    box = outbox(effects)
    done = await world.txns.publish(box, {P0: 7, P1: 3}, generation=world.app.consumer_generation_id)
    box.published(done)
    assert done == {P0, P1} and effects == ["P0", "P1"]
    p0 = [("lists", b"u1", b"L1"), ("state", b"u1", b"S1")]
    assert world.live("grp-events-0").committed == [(p0, {P0: 7}, "grp")]
    assert world.live("grp-events-1").committed == [([("dead", None, b"D1")], {P1: 3}, "grp")]


async def test_a_batch_from_before_a_rebalance_is_not_sent() -> None:
    world = World()
    await world.assign(P0, P1)
    taken_in = world.app.consumer_generation_id
    await world.assign(P1)  # a rebalance kept both partitions, with a new generation
    assert await world.txns.publish(outbox([]), {P0: 7, P1: 3}, generation=taken_in) == set()
    assert all(not p.committed for p in world.producers)


async def test_a_failed_transaction_keeps_the_other_partitions_and_starts_a_new_producer() -> None:
    world = World()
    await world.assign(P0, P1)
    world.fail["grp-events-1"].append(KafkaError)
    effects: list[str] = []
    box = outbox(effects)
    done = await world.txns.publish(box, {P0: 7, P1: 3}, generation=world.app.consumer_generation_id)
    box.published(done)
    assert done == {P0} and effects == ["P0"]
    (first,) = [p for p in world.producers if p.txn_id == "grp-events-1"]
    assert first.aborted == 1 and first.stopped
    assert await world.txns.ready(P1) is True  # before the events are handled again: a fresh producer
    first, second = [p for p in world.producers if p.txn_id == "grp-events-1"]
    assert second.started and not second.stopped
    again = await world.txns.publish(outbox([]), {P1: 3}, generation=world.app.consumer_generation_id)
    assert again == {P1} and second.committed == [([("dead", None, b"D1")], {P1: 3}, "grp")]


async def test_a_producer_that_fails_to_start_is_started_again_by_ready() -> None:
    world = World()
    starts = {"n": 0}
    real = world.new_producer

    def flaky(txn_id: str) -> Any:
        producer = real(txn_id)
        if txn_id == "grp-events-1" and starts["n"] == 0:
            starts["n"] += 1

            async def refuse() -> None:
                raise KafkaError("broker away")

            producer.start = refuse
        return producer

    world.txns._new_producer = flaky
    await world.assign(P0, P1)  # P1's producer fails; the assignment goes on
    assert world.live("grp-events-0").started
    assert await asyncio.wait_for(world.txns.ready(P1), timeout=5.0) is True
    assert world.live("grp-events-1").started


async def test_a_fenced_producer_is_not_restarted_and_its_partition_waits_for_the_rebalance() -> None:
    world = World()
    await world.assign(P0, P1)
    world.fail["grp-events-1"].append(ProducerFenced)
    generation = world.app.consumer_generation_id
    assert await world.txns.publish(outbox([]), {P0: 7, P1: 3}, generation) == {P0}
    assert [p.stopped for p in world.producers if p.txn_id == "grp-events-1"] == [True]  # no new owner fenced back
    assert await world.txns.publish(outbox([]), {P0: 8, P1: 4}, generation) == {P0}
    with pytest.raises(TimeoutError):  # no producer is started for it while it is still assigned
        await asyncio.wait_for(world.txns.ready(P1), timeout=1.5)
    assert [p.txn_id for p in world.producers].count("grp-events-1") == 1
    await world.revoke(P1)
    assert await asyncio.wait_for(world.txns.ready(P1), timeout=2.0) is False  # the rebalance ends the wait


async def test_a_partition_revoked_in_a_rebalance_gets_no_producer_until_it_is_assigned_again() -> None:
    world = World()
    await world.assign(P0, P1)
    await world.app.on_partitions_revoked.send({P1})  # the rebalance began; the consumer still lists P1
    waiting = asyncio.ensure_future(world.txns.ready(P1))
    await asyncio.sleep(1.2)
    # a producer started now would fence P1's next owner, maybe another worker
    assert not waiting.done() and [p.txn_id for p in world.producers].count("grp-events-1") == 1
    await world.assign(P1)  # it came back to us
    assert await asyncio.wait_for(waiting, timeout=2.0) is True
    assert world.live("grp-events-1").started


async def test_revoked_partitions_release_their_producers() -> None:
    world = World()
    await world.assign(P0, P1)
    await world.revoke(P1)
    assert [p.stopped for p in world.producers if p.txn_id == "grp-events-1"] == [True]
    assert await world.txns.ready(P1) is False  # at once: no longer ours (its batch is dropped as stale)
    assert await world.txns.ready(P0) is True
    await world.txns.stop()
    assert all(p.stopped for p in world.producers)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_readers_of_the_output_use_the_matching_isolation_level(guarantee: str) -> None:
    from streams.settings import Settings

    expected = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    assert Settings(processing_guarantee=guarantee).isolation_level == expected
