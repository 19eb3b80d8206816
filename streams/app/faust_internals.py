"""Every private attribute of Faust, mode or aiokafka that streamrec uses, in one place.

faust-streaming is pinned to 0.15.3 (aiokafka 0.14, mode-streaming 0.7): these are not public API and
may change in any release. ``tests/unit/test_faust_internals.py`` asserts each one still exists with the
shape used here, so an upgrade fails there, loudly, rather than somewhere in a rebalance.

What each is for:

* :func:`commit_offsets`: ``Consumer._commit`` commits the offsets given (``commit()`` would commit
  the acked ones, and the input topics do not ack: see :mod:`streams.app.input`); Faust's sensors
  (``on_commit_initiated``/``on_commit_completed``) and monitor (``on_tp_commit``) are told, as
  Faust's own commit would tell them.
* :func:`report_in`: ``message.tracked`` and ``sensors.on_message_in``: Faust tells its sensors a
  message came in only on acking topics.
* :func:`consumer_generation`: ``app.consumer_generation_id``, the consumer group generation, which
  tells a batch taken before a rebalance from one taken after it.
* :func:`force_metadata_update`: ``AIOKafkaConsumer._client``, to refresh metadata while a topic
  is being created.
* :func:`table_data`: ``Table.data``, the table's in-memory store, written directly (see
  :mod:`streams.app.guarantee.at_least_once`).
* :func:`take_batches`: ``Stream.add_processor``, ``Stream._enable_passive``, ``Stream.current_event``,
  ``Stream.enable_acks`` and ``Stream.ack``, as ``Stream.take_events`` uses them, to batch otherwise
  (see there).
* :func:`tune_fetches`: ``ThreadDelegateConsumer._thread._consumer._fetcher`` and aiokafka's
  ``Fetcher._fetch_min_bytes`` / ``_fetch_max_wait_ms``: Faust builds its consumer with
  ``fetch_max_wait_ms=1500`` and aiokafka's ``fetch_min_bytes=1`` and offers neither as a setting.
* :func:`leader_topic_name`: ``app._leader_assignor._leader_topic_name``, the one topic Faust itself
  creates (the Kubernetes topic manifests declare it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer
from faust.types import ChannelT, EventT, StreamT, TableT


def consumer_generation(app: faust.App) -> int:
    """The consumer group generation the worker is in now (it changes with every rebalance)."""
    return int(app.consumer_generation_id)


def assigned_partitions(app: faust.App) -> set[TopicPartition]:
    """The partitions Faust's consumer holds now, as aiokafka ``TopicPartition``s."""
    return {TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()}


def report_in(app: faust.App, events: Sequence[EventT[Any]]) -> None:
    """Tell Faust's sensors these messages came in."""
    # Faust tells its sensors a message came in only on acking topics; it still tells them when
    # the message is acked, so without this its per-topic counters stay empty and its gauge of
    # active messages runs negative.
    on_message_in = app.sensors.on_message_in
    for event in events:
        message = event.message
        if not message.tracked:
            message.tracked = True
            on_message_in(message.tp, message.offset, message)


async def commit_offsets(app: faust.App, offsets: Mapping[TopicPartition, int]) -> bool:
    """Commit exactly ``offsets`` for the app's group, with Faust's sensors and monitor told; raises if
    the commit fails. True if the consumer committed them."""
    consumer = cast(Consumer, app.consumer)
    sensor_state = app.sensors.on_commit_initiated(consumer)
    # Consumer._commit commits the given offsets (commit() would commit acked ones).
    done = await consumer._commit(cast(Any, offsets))
    app.sensors.on_commit_completed(consumer, sensor_state)
    if done:
        app.monitor.on_tp_commit(cast(Any, offsets))
    return bool(done)


async def force_metadata_update(consumer: AIOKafkaConsumer) -> None:
    """Ask the broker for fresh metadata now (a topic just created may not be known yet)."""
    await consumer._client.force_metadata_update()


def table_data(table: TableT[Any, Any]) -> MutableMapping[bytes, bytes]:
    """The table's in-memory store: reads and writes bypass the table's changelog producer."""
    return cast(MutableMapping[bytes, bytes], table.data)


def leader_topic_name(app: faust.App) -> str:
    """The name of the leader-election topic Faust's assignor declares for the app."""
    return str(cast(Any, app._leader_assignor)._leader_topic_name)


async def take_batches(stream: StreamT[Any], max_: int, within_s: float) -> AsyncIterator[list[EventT[Any]]]:
    """The stream's events in batches of at most ``max_``, as ``Stream.take_events`` gives them, but:

    * the next batch fills while the consumer handles one (``take_events`` holds the stream until the
      consumer is done, then reads the next batch from scratch, so reading and handling never overlap);
    * a batch goes once ``within_s`` has passed since the previous one went, or when it is full, not
      ``within_s`` after the previous one was handled: the first event after a quiet spell is handled at
      once, and under load a batch is what arrived while the last one was handled.

    Batches still go at most every ``within_s`` unless full, and a quiet stream is waited on without a
    timer, so an idle worker does not spin. Events are acked after the consumer is done with their batch.
    """
    events: list[EventT[Any]] = []
    arrived, full, room = asyncio.Event(), asyncio.Event(), asyncio.Event()
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        while len(events) >= max_:  # the consumer has not taken the last full batch yet
            room.clear()
            if await stream.wait_for_stopped(room):  # type: ignore[attr-defined]
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("take buffer found current_event is None")
        events.append(event)
        arrived.set()
        if len(events) >= max_:
            full.set()
        return value

    stream.enable_acks = False  # acked here, once handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(cast(ChannelT[Any], aiter(stream.channel)))  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    last = -float("inf")
    while not stream.should_stop:  # type: ignore[attr-defined]
        if await stream.wait_for_stopped(arrived):  # type: ignore[attr-defined]
            break
        wait = last + within_s - loop.time()
        if wait > 0 and not full.is_set():
            await stream.wait_for_stopped(full, timeout=wait)  # type: ignore[attr-defined]
        batch = events[:]
        events.clear()
        arrived.clear()
        full.clear()
        room.set()
        last = loop.time()
        try:
            yield batch
        finally:
            for event in batch:
                await stream.ack(event)


def tune_fetches(app: faust.App, min_bytes: int, max_wait_ms: int) -> bool:
    """Make the worker consumer's next fetches ask the broker for ``min_bytes`` or ``max_wait_ms``, whichever
    comes first; False while its consumer has not started (read when each fetch request is built, so it
    holds from the next one on)."""
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return False
    fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = min_bytes, max_wait_ms
    return True
