"""Helpers for tests, benchmarks and notebooks: drive the recommender core, or the app's parts, without Kafka.

* :func:`run_batch`, :func:`run_lists`: the recommender core on a dict of user states.
* :class:`HoldsNothing`: the part of a fake recommender that holds no interest update for an item.
* :class:`FakeApp`: the little of a Faust app that the guarantees and inputs use (rebalance signals, the
  consumer's assignment and generation), driven by hand.
* :class:`PartitionedStates` (re-exported): the in-memory user-state store.
* :func:`record`, :func:`event_record`: input records as Faust or a hole reading would deliver them.
* :func:`unit_rows`: random unit vectors; :func:`free_ports`: ports to start real servers on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from streams.app.batch import Record
from streams.app.guarantee.states import PartitionedStates
from streams.contracts import Event, EventType, Recommendation
from streams.recommender import BatchResult, Recommender

__all__ = [
    "FakeApp",
    "FakeSignal",
    "HoldsNothing",
    "PartitionedStates",
    "event_record",
    "free_ports",
    "record",
    "run_batch",
    "run_lists",
    "unit_rows",
]


def run_batch(
    recommender: Recommender, events: Sequence[tuple[bytes, Event]], store: MutableMapping[bytes, bytes]
) -> BatchResult:
    """:meth:`Recommender.process` one batch and write its new user states into ``store``, as the
    worker's table does once the batch is published."""
    result = recommender.process(events, store)
    store.update(result.states)
    return result


def run_lists(
    recommender: Recommender, events: Sequence[tuple[bytes, Event]], store: MutableMapping[bytes, bytes]
) -> list[Recommendation]:
    """:func:`run_batch`'s lists."""
    return run_batch(recommender, events, store).lists


class HoldsNothing:
    """Mixed into a fake recommender: no user's interest update ever waits for an item's vector."""

    def held_items(self, state: bytes) -> list[str]:
        return []

    def fold(self, keys: Iterable[bytes], store: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        return {}


class FakeSignal:
    """A Faust signal whose receivers are called (and awaited) in order by :meth:`send`."""

    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> None:
        self.receivers.append(fn)

    async def send(self, tps: set[TopicPartition]) -> None:
        for fn in self.receivers:
            await fn(None, tps, signal=self)


class FakeApp:
    """A stand-in for ``faust.App`` where the guarantees and inputs need one.

    :meth:`assign` and :meth:`revoke` play a rebalance: the consumer's assignment changes, the
    generation moves on (on assignment) and the signals go out.
    """

    def __init__(self, group_id: str = "grp", assignment: Iterable[TopicPartition] = (), generation: int = 0) -> None:
        self.conf = SimpleNamespace(id=group_id, topic_replication_factor=1)
        self.on_partitions_assigned = FakeSignal()
        self.on_partitions_revoked = FakeSignal()
        self.on_before_shutdown = FakeSignal()
        self.consumer_generation_id = generation
        self.assignment: set[TopicPartition] = set(assignment)
        self.consumer = SimpleNamespace(assignment=lambda: self.assignment)

    async def assign(self, *tps: TopicPartition) -> None:
        self.assignment |= set(tps)
        self.consumer_generation_id += 1
        await self.on_partitions_assigned.send(set(tps))

    async def revoke(self, *tps: TopicPartition) -> None:
        self.assignment -= set(tps)
        await self.on_partitions_revoked.send(set(tps))


def record(tp: TopicPartition, offset: int, key: bytes | None = b"k", value: bytes | None = None) -> Record:
    """A record of ``tp`` at ``offset``; its value names them unless given."""
    data = f"{tp.partition}:{offset}".encode() if value is None else value
    return Record(tp.topic, tp.partition, offset, key, data, 0.0)


def event_record(tp: TopicPartition, offset: int, user: str, item: str, ts: float, kind: str = "click") -> Record:
    """An ``events`` record: ``user`` did ``kind`` on ``item`` at ``ts``, keyed by the user as producers must."""
    event = Event(event_id=f"e{offset}", user_id=user, item_id=item, type=EventType(kind), ts=ts)
    return Record(tp.topic, tp.partition, offset, user.encode(), event.model_dump_json().encode(), ts)


def unit_rows(rng: np.random.Generator, n: int, d: int, dtype: type[np.floating[Any]] = np.float32) -> npt.NDArray[Any]:
    """``n`` random unit vectors of dimension ``d`` (rows).

    >>> rows = unit_rows(np.random.default_rng(0), 3, 4)
    >>> rows.shape, rows.dtype, bool(np.allclose(np.linalg.norm(rows, axis=1), 1.0))
    ((3, 4), dtype('float32'), True)
    """
    x = rng.normal(size=(n, d)).astype(dtype)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
