"""What a processing guarantee is to the rest of the worker: the :class:`Guarantee` interface, and the
small :class:`PartitionReader` and :class:`UserStates` interfaces it hands out.

A guarantee owns everything that differs between at-least-once and exactly-once: the isolation level
its readers use, how a batch's output is published and its input offsets committed, when a
partition is ready to be handled, what a rebalance does, and the store of user states (restored and
evicted with the partitions). It is the only listener to Faust's rebalance signals: an
:class:`~streams.app.input.Input` hears of revoked partitions through :meth:`Guarantee.when_revoked`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Any, ClassVar, Protocol

import faust
from aiokafka import TopicPartition

from streams.app import faust_internals
from streams.app.batch import Outbox, Record
from streams.app.guarantee.reader import BrokerReader
from streams.app.guarantee.states import UserStates
from streams.security import KafkaConnection

log = logging.getLogger(__name__)


class PartitionReader(Protocol):
    """Reads an input partition straight from the broker, beside Faust's consumer."""

    async def committed(self, tp: TopicPartition) -> int:
        """Where ``tp`` starts for the group: its committed offset, else the log's start."""

    async def read(self, tp: TopicPartition, start: int, end: int, limit: int | None = None) -> list[Record]:
        """The records at offsets ``start`` to ``end - 1`` of ``tp`` (the first ``limit`` of them)."""

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end: the offset after its last record (its last stable offset when reading
        committed data)."""

    async def stop(self) -> None: ...


def topic_partitions(tps: Iterable[Any]) -> set[TopicPartition]:
    """Faust's (or aiokafka's) topic partitions as aiokafka ``TopicPartition``\\ s."""
    return {TopicPartition(tp.topic, tp.partition) for tp in tps}


class Guarantee(ABC):
    """How a worker's output reaches the broker and its input offsets are committed."""

    #: How readers of what this worker wrote, and its own readers, read the topics.
    isolation_level: ClassVar[str]
    #: The user-state store: what the recommender reads, what the batches write.
    states: UserStates
    #: The topic the user states are written to (partitioned like the events).
    changelog: str

    def __init__(self, app: faust.App, kafka: KafkaConnection) -> None:
        self.app = app
        self.kafka = kafka
        self.group_id: str = app.conf.id
        self._forget: list[Callable[[set[TopicPartition]], None]] = []
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    # --- rebalances -----------------------------------------------------------------------------

    def when_revoked(self, forget: Callable[[set[TopicPartition]], None]) -> None:
        """Call ``forget`` with the revoked partitions at each rebalance, after the guarantee's own handling."""
        self._forget.append(forget)

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.assigned(topic_partitions(args[0]))

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = topic_partitions(args[0])
        await self.revoked(revoked)
        for forget in self._forget:
            forget(revoked)

    async def assigned(self, tps: set[TopicPartition]) -> None:
        """``tps`` were given to this worker (a rebalance ends)."""
        return None

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """``tps`` are taken away (a rebalance begins); the consumer may still list them until it ends."""
        return None

    def generation(self) -> int:
        """The consumer group generation now: a batch taken in an older one is stale."""
        return faust_internals.consumer_generation(self.app)

    def assignment(self) -> set[TopicPartition]:
        """The partitions Faust's consumer holds now."""
        return faust_internals.assigned_partitions(self.app)

    # --- batches --------------------------------------------------------------------------------

    async def ready(self, tp: TopicPartition) -> bool:
        """Wait until ``tp``'s output can be published and its committed offset is final for this worker
        (no earlier owner can move it); False if ``tp`` was taken away meanwhile."""
        # Nothing to wait for unless the output commits the offsets. A partition no longer held is not
        # handled: its events, taken before a rebalance, are its new owner's (handling them here too
        # would list them twice, and could write a user's state after the new owner's).
        return tp in self.assignment()

    @abstractmethod
    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        """Send ``outbox``; ``offsets`` are the next offsets to read after the batch, per input partition.

        Returns the input partitions whose messages are out. A partition left out sent nothing (its
        batch was taken in a consumer ``generation`` before a rebalance, or its transaction failed);
        its events are read again, by whoever owns the partition now.
        """

    @abstractmethod
    async def commit(self, handled: Mapping[TopicPartition, int]) -> None:
        """Commit ``handled`` (the next offset to handle, per partition) where :meth:`publish` did not."""

    def reader(self) -> PartitionReader:
        """A new reader of the input partitions, with this guarantee's isolation level."""
        return BrokerReader(self.kafka, self.group_id, self.isolation_level)

    async def on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Release what the guarantee holds (producers)."""
        return None
