"""What both guarantees share: rebalance handling (what is forgotten, evicted, restored) and commits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.app import faust_internals
from streams.app.guarantee import AtLeastOnce, ExactlyOnce
from streams.app.guarantee.restore import StateRestore
from streams.app.guarantee.states import PartitionedStates, TableStates
from streams.security import KafkaConnection
from streams.settings import Settings
from streams.testing import FakeApp

P0, P1 = TopicPartition("events", 0), TopicPartition("events", 1)
KAFKA = KafkaConnection(bootstrap="unused:9092")


@pytest.mark.parametrize("guarantee", [AtLeastOnce, ExactlyOnce])
def test_each_guarantee_reads_with_the_isolation_level_settings_name(guarantee: Any) -> None:
    name = "exactly_once" if guarantee is ExactlyOnce else "at_least_once"
    assert guarantee.isolation_level == Settings(processing_guarantee=name).isolation_level


async def test_at_least_once_commits_newer_offsets_of_assigned_partitions_and_forgets_revoked_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app: Any = FakeApp(assignment={P0, P1})
    commits: list[dict[TopicPartition, int]] = []

    async def commit_offsets(_: Any, offsets: Mapping[TopicPartition, int]) -> bool:
        commits.append(dict(offsets))
        return True

    monkeypatch.setattr(faust_internals, "commit_offsets", commit_offsets)
    guarantee = AtLeastOnce(app, KAFKA, {}, TableStates({}))
    forgotten: list[set[TopicPartition]] = []
    guarantee.when_revoked(lambda tps: forgotten.append(tps | {TopicPartition("seen-after", 0)}))
    await guarantee.commit({P0: 5, P1: 3, TopicPartition("events", 2): 9})  # partition 2 is not ours
    await guarantee.commit({P0: 5, P1: 4})  # P0 unchanged: not committed again
    assert commits == [{P0: 5, P1: 3}, {P1: 4}]
    await app.revoke(P0)
    assert P0 not in guarantee.committed and forgotten == [{P0, TopicPartition("seen-after", 0)}]
    await app.assign(P0)
    await guarantee.commit({P0: 5})  # back to us: committed again, it may have moved on elsewhere
    assert commits[-1] == {P0: 5}


class ChangelogRestore(StateRestore):
    """A restore from an in-memory changelog: partition -> {user: state}."""

    def __init__(self, states: PartitionedStates, changelog: dict[int, dict[bytes, bytes]]) -> None:
        async def declare() -> None:
            return None

        super().__init__(KAFKA, "events", "changelog", states, declare)
        self.data = changelog

    async def restore(self, partition: int) -> int:
        for key, value in self.data.get(partition, {}).items():
            self.store.put(partition, key, value)
        return len(self.data.get(partition, {}))


class IdleProducer:
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_exactly_once_restores_assigned_partitions_and_evicts_revoked_ones() -> None:
    app: Any = FakeApp()
    states = PartitionedStates()
    restore = ChangelogRestore(states, {0: {b"u0": b"s0"}, 1: {b"u1": b"s1", b"u3": b"s3"}})
    guarantee = ExactlyOnce(app, KAFKA, {"events"}, restore, lambda _: IdleProducer(), states=states)  # type: ignore[arg-type,return-value]
    forgotten: list[set[TopicPartition]] = []
    guarantee.when_revoked(forgotten.append)
    await app.assign(P0, P1)
    assert dict(guarantee.states) == {b"u0": b"s0", b"u1": b"s1", b"u3": b"s3"}
    guarantee.states.put(1, b"u5", b"s5")  # written by a batch since
    await app.revoke(P1)
    assert dict(guarantee.states) == {b"u0": b"s0"} and forgotten == [{P1}]
    await app.assign(P1)
    assert set(guarantee.states) == {b"u0", b"u1", b"u3"}
