"""Producing contract messages and collecting recommendations with aiokafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import BaseModel

from streams.contracts import Recommendation, decode, encode
from streams.security import KafkaConnection, as_connection


async def produce(
    kafka: str | KafkaConnection,
    topic: str,
    messages: Iterable[tuple[str, BaseModel | bytes]],
    on_sent: Callable[[int, float], None] | None = None,
    rate: float | Callable[[], float] = 0.0,
    linger_ms: int = 5,
) -> int:
    """Send ``(key, message)`` pairs, keyed as the contract says; ``rate`` > 0 paces events/s.

    ``rate`` may be a function, asked before each message (the demo's :class:`~streams.demo.pace.Pacer`);
    a fixed rate is kept on average (sends that fell behind catch up), a changing one from where it
    stands (at most a tenth of a second is caught up). ``on_sent(i, t)`` is called with the index of
    each message and the wall-clock time it was handed to the producer. ``kafka``: a connection, or
    bootstrap servers for a plaintext one.
    """
    producer = AIOKafkaProducer(**as_connection(kafka).aiokafka(), linger_ms=linger_ms, max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    due = time.perf_counter()  # when the next message is due
    try:
        pending = []
        for key, message in messages:
            per_s = rate() if callable(rate) else rate
            if per_s > 0:
                now = time.perf_counter()
                if callable(rate):
                    due = max(due, now - 0.1)
                if due > now:
                    await asyncio.sleep(due - now)
                due += 1.0 / per_s
            value = message if isinstance(message, bytes) else encode(message)
            pending.append(await producer.send(topic, value=value, key=key.encode()))
            if on_sent is not None:
                on_sent(n, time.time())
            n += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


async def send_raw(
    kafka: str | KafkaConnection, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    """Send ``(key, value)`` bytes as they are: a null key or value (a tombstone), hostile bytes."""
    producer = AIOKafkaProducer(**as_connection(kafka).aiokafka(), max_request_size=1024 * 1024)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=key, value=value) for key, value in records])
    finally:
        await producer.stop()


async def read_records(
    kafka: str | KafkaConnection, topic: str, idle_s: float = 2.0, isolation_level: str = "read_uncommitted",
    at_least: int = 0, timeout_s: float = 60.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, until nothing new came for ``idle_s`` once there are
    ``at_least`` (or ``timeout_s`` passed)."""
    consumer = AIOKafkaConsumer(
        topic, **as_connection(kafka).aiokafka(), auto_offset_reset="earliest", group_id=None,
        isolation_level=isolation_level,
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            out.extend(r for records in batch.values() for r in records)
            if not batch and (len(out) >= at_least or time.monotonic() > deadline):
                return out
    finally:
        await consumer.stop()


class RecommendationCollector:
    """Consumes a recommendations topic from the beginning and keeps every list, with arrival time.

    ``fetch_max_wait_ms`` bounds how long the broker holds a fetch that has no data yet; latency
    measurements want it small, so a list never waits for a fetch round-trip that started empty.
    """

    def __init__(
        self,
        kafka: str | KafkaConnection,
        topic: str,
        fetch_max_wait_ms: int = 500,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self.kafka = as_connection(kafka)
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.isolation_level = isolation_level
        self.received: list[tuple[float, Recommendation]] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            **self.kafka.aiokafka(),
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            isolation_level=self.isolation_level,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                self.received.extend((now, decode(r.value, Recommendation)) for r in records)

    async def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise what stopped the consumer
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.received)} of {count} recommendations after {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
