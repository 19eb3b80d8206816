"""Exactly-once's user states: read back from the changelog when an input partition is assigned."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app.guarantee.reader import read_range
from streams.app.guarantee.states import UserStates
from streams.security import KafkaConnection

log = logging.getLogger(__name__)


class StateRestore:
    """The user states of the input partitions this worker owns, read back from their changelog.

    The changelog is partitioned as the input (by user key), so input partition ``p``'s states are
    changelog partition ``p``; reading committed data only skips the writes of aborted transactions.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        input_topic: str,
        changelog: str,
        store: UserStates,
        declare: Callable[[], Awaitable[None]],
    ) -> None:
        self.kafka = kafka
        self.input_topic = input_topic
        self.changelog = changelog
        self.store = store
        # Creates the changelog topic if it is not there yet. It runs inside the rebalance callback,
        # on Faust's consumer thread, so it must not go through Faust (Topic.maybe_declare waits
        # for that same thread: a deadlock).
        self.declare = declare
        self._declared = False

    async def restore(self, partition: int) -> int:
        """Load changelog ``partition`` into the store; returns how many records were read."""
        if not self._declared:  # the first assignment can come before anything created the topic
            await self.declare()
            self._declared = True
        tp = TopicPartition(self.changelog, partition)
        reader = AIOKafkaConsumer(
            **self.kafka.aiokafka(), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        await reader.start()
        count = 0
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]  # the last stable offset, for read_committed
            async for record in read_range(reader, tp, await reader.position(tp), end):
                count += 1
                if record.key is not None:
                    self.store.put(partition, record.key, record.value)
        finally:
            await reader.stop()
        log.info("restored %d user-state records of %s[%d]", count, self.changelog, partition)
        return count
