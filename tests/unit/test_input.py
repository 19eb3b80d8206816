"""An agent's input is handled in offset order with no hole: what the consumer skipped is read back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence, Set
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from streams.app.batch import Outbox, Record
from streams.app.guarantee import Guarantee
from streams.app.input import Input
from streams.security import KafkaConnection
from streams.testing import FakeApp, record

P0, P1 = TopicPartition("events", 0), TopicPartition("events", 1)


class Publishes(Guarantee):
    """Publishes everything, commits nothing (the logic under test is Input's)."""

    isolation_level = "read_uncommitted"

    def __init__(self, app: Any) -> None:
        super().__init__(app, KafkaConnection(bootstrap="unused:9092"))
        self.commits: list[dict[TopicPartition, int]] = []
        self.published: list[dict[TopicPartition, int]] = []

    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        self.published.append(dict(offsets))
        return set(offsets)

    async def commit(self, handled: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(handled))


class LogReader:
    """The broker side replaced by a list of records per partition."""

    def __init__(self, sizes: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> None:
        self.log = {tp: [record(tp, o) for o in range(n)] for tp, n in sizes.items()}
        self.ends = dict(sizes)  # above a log's size: offsets without a record (transaction markers)
        self.start = committed
        self.reads: list[tuple[TopicPartition, int, int]] = []

    async def committed(self, tp: TopicPartition) -> int:
        return self.start.get(tp, 0)

    async def read(self, tp: TopicPartition, start: int, end: int, limit: int | None = None) -> list[Record]:
        self.reads.append((tp, start, end))
        return [r for r in self.log[tp] if start <= r.offset < end][:limit]

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def stop(self) -> None:
        return None


class BrokerLog(Input):
    """An Input on a fake app, guarantee and broker log (the logic under test is Input's)."""

    def __init__(self, sizes: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> None:
        app: Any = FakeApp(assignment=sizes)
        self.handled_batches: list[list[tuple[int, int]]] = []

        async def work(batch: Any) -> Outbox:
            self.handled_batches.append([(r.partition, r.offset) for r in batch])
            return Outbox()

        self.reader_log = LogReader(sizes, committed)
        super().__init__(app, Publishes(app), self.reader_log, work, commit_interval_s=60.0, on_hole=self.hole)
        self.start = self.reader_log.start
        self.holes: list[tuple[str, int]] = []

    def hole(self, topic: str, count: int) -> None:
        self.holes.append((topic, count))


async def test_holes_before_and_inside_a_batch_are_read_back_in_order() -> None:
    broker = BrokerLog({P0: 10}, committed={P0: 2})
    # The consumer delivered 4 and 5, skipped 6-8, then delivered 9: 2-3 and 6-8 are missing.
    await broker._handle([record(P0, o) for o in (4, 5, 9)], 0)
    assert broker.handled_batches == [[(0, o) for o in range(2, 10)]]
    assert broker.next[P0] == 10
    assert broker.holes == [("events", 2), ("events", 3)]


async def test_partitions_are_checked_apart_and_what_was_handled_is_skipped() -> None:
    broker = BrokerLog({P0: 6, P1: 6}, committed={})
    await broker._handle([record(P0, 0), record(P1, 0), record(P0, 1), record(P1, 1)], 0)
    # P0 offset 1 is delivered again (handled already: skipped); P1 lost 2-3.
    await broker._handle([record(P0, 1), record(P0, 2), record(P1, 4)], 0)
    assert broker.handled_batches[1] == [(0, 2), (1, 2), (1, 3), (1, 4)]
    assert broker.next == {P0: 3, P1: 5}


async def test_a_partition_given_back_starts_again_from_its_committed_offset() -> None:
    broker = BrokerLog({P0: 8}, committed={P0: 0})
    await broker._handle([record(P0, 0), record(P0, 1)], 0)
    broker.start[P0] = 5  # another worker went on to 5 meanwhile
    broker.forget({P0})
    await broker._handle([record(P0, 5)], 0)
    assert broker.handled_batches[1] == [(0, 5)], "no hole between our last offset and the new committed one"


class FailsOnce(Publishes):
    """An output whose first publish of ``tp`` fails (a transaction aborted), as ExactlyOnce reports it."""

    def __init__(self, app: Any, tp: TopicPartition) -> None:
        super().__init__(app)
        self.failing = {tp}
        self.published: list[dict[TopicPartition, int]] = []
        self.readied: list[TopicPartition] = []
        self.lost: set[TopicPartition] = set()  # taken away: ready() says so
        self.generations: list[int] = []

    async def ready(self, tp: TopicPartition) -> bool:
        self.readied.append(tp)
        return tp not in self.lost

    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        self.generations.append(generation)
        done = set(offsets) - self.failing
        self.failing.clear()
        self.published.append({tp: offsets[tp] for tp in done})
        return done


async def test_events_of_an_unpublished_partition_are_handled_again_at_once() -> None:
    broker = BrokerLog({P0: 2, P1: 2}, committed={})
    broker.guarantee = output = FailsOnce(broker.app, P1)
    await broker._handle([record(P0, 0), record(P1, 0), record(P0, 1), record(P1, 1)], 0, max_backoff_s=0.0)
    # P1's two events are the partition's last: waiting for a later record would leave them unhandled.
    assert broker.handled_batches == [[(0, 0), (1, 0), (0, 1), (1, 1)], [(1, 0), (1, 1)]]
    assert output.published == [{P0: 2}, {P1: 2}] and P1 in output.readied
    assert broker.next == {P0: 2, P1: 2}


async def test_a_stale_batch_is_handled_again_from_the_committed_offset_where_the_partition_stayed_ours() -> None:
    # Faust need not deliver a dropped batch again (no seek back without a committed offset): at a
    # partition's end its events would wait for a record that never comes.
    broker = BrokerLog({P0: 4, P1: 2}, committed={P0: 0, P1: 0})
    broker.guarantee = output = FailsOnce(broker.app, P0)
    output.failing.add(P1)
    output.lost = {P1}  # given to another worker by the rebalance
    broker.app.consumer_generation_id = 1  # the batch was taken in generation 0
    work = broker.work

    async def meanwhile(batch: Any) -> Outbox:
        broker.start[P0] = 1  # another worker handled offset 0 while we held the batch
        return await work(batch)

    broker.work = meanwhile
    await broker._handle([record(P0, 0), record(P0, 1), record(P1, 0)], 0, max_backoff_s=0.0)
    assert broker.handled_batches == [[(0, 0), (0, 1)], [(0, 1)]], "P1's event is left to its new owner"
    assert output.published == [{}, {P0: 2}]
    assert output.generations == [0, 1]
    assert broker.next == {P0: 2}  # P1 is its new owner's


async def test_a_stop_finishes_the_batch_in_hand_and_commits_it() -> None:
    broker = BrokerLog({P0: 3}, committed={})
    release = asyncio.Event()
    plain_work = broker.work

    async def slow(batch: Any) -> Outbox:  # the recommender still busy when SIGTERM arrives
        await release.wait()
        return await plain_work(batch)

    broker.work = slow
    output = broker.guarantee
    assert isinstance(output, Publishes)
    broker._in_hand = asyncio.ensure_future(broker._handle([record(P0, o) for o in range(3)], 0))
    draining = asyncio.ensure_future(broker.drain())
    await asyncio.sleep(0.01)
    assert not draining.done() and output.commits == [], "nothing committed while the batch is in hand"
    release.set()
    await draining
    assert output.commits[-1] == {P0: 3}, "the stop commits the batch it waited for"


async def test_a_tick_works_between_batches_on_the_topics_partitions_with_their_offsets_unchanged() -> None:
    items = TopicPartition("items", 0)
    broker = BrokerLog({P0: 10, P1: 5, items: 3}, committed={P0: 2, P1: 4})
    await broker._handle([record(P0, o) for o in (2, 3)], 0)
    seen: list[dict[TopicPartition, int]] = []
    applied: list[str] = []

    async def wake(offsets: Mapping[TopicPartition, int]) -> Outbox:
        seen.append(dict(offsets))
        out = Outbox()
        out.add(P1, "recs", b"u", b"list")
        out.after(P1, lambda: applied.append("state"))
        return out

    await broker.tick("events", wake)
    assert seen == [{P0: 4, P1: 4}], "handled up to 4 on P0; P1 where its group committed; no items partition"
    guarantee: Any = broker.guarantee
    assert guarantee.published[-1] == {P1: 4} and applied == ["state"], "published with its offset unchanged"
    assert broker.next == {P0: 4, P1: 4}

    async def nothing(offsets: Mapping[TopicPartition, int]) -> Outbox:
        return Outbox()

    published = len(guarantee.published)
    await broker.tick("events", nothing)
    assert len(guarantee.published) == published, "nothing to publish, nothing published"


async def test_records_left_at_a_partitions_end_are_read_once_they_waited_a_whole_interval() -> None:
    broker = BrokerLog({P0: 10, P1: 4}, committed={})
    await broker._handle([record(P0, o) for o in range(4)] + [record(P1, o) for o in range(4)], 0)
    # 4-9 of P0 were fetched, then lost by the consumer: no later record shows the hole.
    await broker.catch_up("events", limit=100)
    assert len(broker.handled_batches) == 1 and broker.reader_log.reads == [], "a first look only notes the ends"
    await broker.catch_up("events", limit=100)
    assert broker.handled_batches[-1] == [(0, o) for o in range(4, 10)], "read from where it stopped, in order"
    assert broker.next == {P0: 10, P1: 4} and broker.holes == [("events", 6)]
    guarantee: Any = broker.guarantee
    assert guarantee.published[-1] == {P0: 10}, "published with the next offset to read"
    await broker.catch_up("events", limit=100)
    assert len(broker.handled_batches) == 2, "nothing waits any more"


async def test_a_partition_the_consumer_moves_on_is_left_to_it_and_a_backlog_is_read_a_batch_at_a_time() -> None:
    broker = BrokerLog({P0: 10}, committed={})
    await broker.catch_up("events", limit=3)  # never handled since assigned: from its committed offset
    await broker._handle([record(P0, 0)], 0)  # the consumer delivers meanwhile
    await broker.catch_up("events", limit=3)
    assert broker.reader_log.reads == [], "it moved since the last look"
    await broker.catch_up("events", limit=3)
    assert broker.handled_batches[-1] == [(0, 1), (0, 2), (0, 3)], "at most limit records"
    await broker._handle([record(P0, 2), record(P0, 4)], 0)  # delivered late: 2 skipped, 4 handled
    assert broker.handled_batches[-1] == [(0, 4)] and broker.next[P0] == 5


async def test_offsets_with_no_record_at_a_partitions_end_are_read_once_per_end() -> None:
    broker = BrokerLog({P0: 3}, committed={})
    broker.reader_log.ends[P0] = 4  # a transaction's commit marker at offset 3
    await broker._handle([record(P0, o) for o in range(3)], 0)
    for _ in range(4):
        await broker.catch_up("events", limit=100)
    assert broker.reader_log.reads == [(P0, 3, 4)] and len(broker.handled_batches) == 1
    broker.reader_log.log[P0].append(record(P0, 4))  # a new record after the marker, also lost
    broker.reader_log.ends[P0] = 5
    await broker.catch_up("events", limit=100)
    await broker.catch_up("events", limit=100)
    assert broker.handled_batches[-1] == [(0, 4)] and broker.next[P0] == 5


async def test_nothing_is_read_once_the_agent_has_stopped() -> None:
    broker = BrokerLog({P0: 10}, committed={})
    await broker.stop()
    for _ in range(2):
        await broker.catch_up("events", limit=100)
    assert broker.reader_log.reads == [] and broker.handled_batches == [], "a stopped reader stays stopped"


async def test_while_batches_come_a_partition_that_waits_is_left_to_the_consumer() -> None:
    broker = BrokerLog({P0: 10, P1: 10}, committed={})
    await broker._handle([record(P0, 0), record(P1, 0)], 0)
    await broker.catch_up("events", limit=100)
    await broker._handle([record(P1, 1)], 0)  # a backlog: the consumer is busy with P1 for now
    await broker.catch_up("events", limit=100)
    assert broker.reader_log.reads == [], "P0 waited, but batches came: not read"
    await broker.catch_up("events", limit=100)  # then nothing came for a whole interval
    assert broker.handled_batches[-1] == [(0, o) for o in range(1, 10)] + [(1, o) for o in range(2, 10)]


async def test_a_look_without_the_brokers_end_offsets_reads_nothing_and_the_next_one_goes_on() -> None:
    broker = BrokerLog({P0: 10}, committed={})
    await broker._handle([record(P0, 0)], 0)
    await broker.catch_up("events", limit=100)
    answer = broker.reader_log.end_offsets

    async def unreachable(tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        raise KafkaConnectionError("broker away")

    broker.reader_log.end_offsets = unreachable  # type: ignore[method-assign]
    await broker.catch_up("events", limit=100)
    assert broker.reader_log.reads == []
    broker.reader_log.end_offsets = answer  # type: ignore[method-assign]
    await broker.catch_up("events", limit=100)
    assert broker.handled_batches[-1] == [(0, o) for o in range(1, 10)]


async def test_a_batch_leaves_out_a_partition_taken_away_before_it_came() -> None:
    broker = BrokerLog({P0: 4, P1: 4}, committed={})
    await broker._handle([record(P0, 0), record(P1, 0)], 0)
    await broker.app.revoke(P1)  # a rebalance gave P1 to another worker; its events were already taken
    await broker._handle([record(P1, 2), record(P0, 1), record(P1, 3)], 0)
    assert broker.handled_batches[-1] == [(0, 1)], "P1's events are its new owner's: not listed twice"
    assert broker.reader_log.reads == [] and broker.next == {P0: 2}
