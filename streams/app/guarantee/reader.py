"""Reading input and changelog partitions straight from the broker, beside Faust's consumer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.app.batch import Record
from streams.security import KafkaConnection

log = logging.getLogger(__name__)


async def read_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of ``tp`` at offsets ``start`` to ``end - 1``, read with ``consumer`` (``tp`` assigned).

    Offsets without a record (transaction markers, aborted records under ``read_committed``) are
    passed over: the loop ends on the consumer's position, not on a record count.
    """
    consumer.seek(tp, start)
    while await consumer.position(tp) < end:
        fetched = await consumer.getmany(tp, timeout_ms=1000)
        for record in fetched.get(tp, []):
            if record.offset < end:
                yield record


class BrokerReader:
    """A :class:`~streams.app.guarantee.base.PartitionReader` on its own aiokafka consumer, started on
    first use."""

    def __init__(self, kafka: KafkaConnection, group_id: str, isolation_level: str) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.isolation_level = isolation_level
        self._reader: AIOKafkaConsumer | None = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            # The group's id, to read its committed offsets; it never joins (partitions are assigned).
            self._reader = AIOKafkaConsumer(
                **self.kafka.aiokafka(),
                group_id=self.group_id,
                enable_auto_commit=False,
                isolation_level=self.isolation_level,
            )
            await self._reader.start()
        return self._reader

    async def committed(self, tp: TopicPartition) -> int:
        """Where this partition starts for the group: its committed offset, else the log's start."""
        consumer = await self._consumer()
        committed = await consumer.committed(tp)
        if committed is not None and committed >= 0:
            return int(committed)
        return int((await consumer.beginning_offsets([tp]))[tp])

    async def read(self, tp: TopicPartition, start: int, end: int, limit: int | None = None) -> list[Record]:
        """The records at offsets ``start`` to ``end - 1`` of ``tp``, read from the broker; the first ``limit``."""
        consumer = await self._consumer()
        consumer.assign([tp])
        out: list[Record] = []
        async for r in read_range(consumer, tp, start, end):
            out.append(Record.of_consumer_record(r))
            if len(out) == limit:
                break
        return out

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end for this reader's isolation level (the last stable offset under read_committed)."""
        consumer = await self._consumer()
        return {tp: int(offset) for tp, offset in (await consumer.end_offsets(list(tps))).items()}

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
