"""The private Faust, mode and aiokafka attributes :mod:`streams.app.faust_internals` relies on still exist,
with the shape it uses. A failure here means the pinned versions changed: fix faust_internals, nothing else."""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from importlib.metadata import version

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from faust.sensors.base import SensorDelegate
from faust.sensors.monitor import Monitor
from faust.transport.consumer import Consumer
from faust.types.tuples import Message

from streams.app import faust_internals

PINNED = {name: version(name) for name in ("faust-streaming", "mode-streaming", "aiokafka")}


def params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_consumer_commits_the_offsets_it_is_given() -> None:
    assert inspect.iscoroutinefunction(Consumer._commit), PINNED
    assert params(Consumer._commit) == ["self", "offsets"], PINNED


def test_sensors_and_monitor_take_what_we_tell_them() -> None:
    assert params(SensorDelegate.on_message_in) == ["self", "tp", "offset", "message"], PINNED
    assert params(SensorDelegate.on_commit_initiated) == ["self", "consumer"], PINNED
    assert params(SensorDelegate.on_commit_completed) == ["self", "consumer", "state"], PINNED
    assert params(Monitor.on_tp_commit) == ["self", "tp_offsets"], PINNED


def test_messages_carry_a_tracked_flag() -> None:
    assert "tracked" in Message.__slots__, PINNED


def test_the_app_knows_its_generation_leader_topic_and_tables() -> None:
    app = faust.App("contract", broker="kafka://127.0.0.1:1", store="memory://")
    assert isinstance(app.consumer_generation_id, int), PINNED
    assert faust_internals.consumer_generation(app) == 0
    assert faust_internals.leader_topic_name(app) == "contract-__assignor-__leader", PINNED
    table = app.Table("t", default=None, key_type=bytes, value_type=bytes)
    data = faust_internals.table_data(table)
    assert isinstance(data, MutableMapping), PINNED
    data[b"k"] = b"v"
    assert table[b"k"] == b"v", PINNED  # the table reads the store we write


async def test_the_consumer_has_a_client_that_refreshes_metadata() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        assert isinstance(consumer._client, AIOKafkaClient), PINNED
    finally:
        await consumer.stop()
    # a plain method returning a future to await (not a coroutine function)
    assert callable(AIOKafkaClient.force_metadata_update), PINNED
    assert params(AIOKafkaClient.force_metadata_update) == ["self"], PINNED


def test_streams_take_processors_feed_passively_and_ack_by_event() -> None:
    from faust.streams import Stream

    assert params(Stream.add_processor) == ["self", "processor"], PINNED
    assert params(Stream._enable_passive) == ["self", "channel", "declare"], PINNED
    assert inspect.iscoroutinefunction(Stream.ack) and params(Stream.ack) == ["self", "event"], PINNED
    stream = faust.App("contract", broker="kafka://127.0.0.1:1", store="memory://").channel().stream()
    assert stream.current_event is None and stream.enable_acks is True, PINNED  # set per value, then by us


def test_the_worker_consumer_reaches_aiokafkas_fetcher_and_its_fetch_limits() -> None:
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert "self._thread = self._new_consumer_thread()" in inspect.getsource(ThreadDelegateConsumer.__init__), PINNED
    assert "self._consumer = self._create_consumer(" in inspect.getsource(AIOKafkaConsumerThread.on_start), PINNED
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start), PINNED
    init, build = inspect.getsource(Fetcher.__init__), inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_min_bytes = fetch_min_bytes" in init and "self._fetch_max_wait_ms = fetch_max_wait_ms" in init
    # read each time a fetch request is built, so a change holds from the next fetch on
    assert "self._fetch_max_wait_ms," in build and "self._fetch_min_bytes," in build, PINNED


def test_tune_fetches_sets_the_fetchers_limits_once_the_consumer_has_one() -> None:
    from types import SimpleNamespace

    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    consumer = SimpleNamespace(_fetcher=fetcher)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))
    assert faust_internals.tune_fetches(app, 16_384, 10)  # type: ignore[arg-type]
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (16_384, 10)
    not_started = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert not faust_internals.tune_fetches(not_started, 16_384, 10)  # type: ignore[arg-type]
