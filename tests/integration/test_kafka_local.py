"""The local real Kafka broker: client round trip, topic creation, lifecycle from separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.app.admin import acreate_topics
from streams.local.kafka import KafkaBroker, ensure_jars
from streams.settings import Settings
from streams.testing import free_ports

# `kafka_broker` comes from tests/integration/conftest.py (one broker for the session).

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_round_trip_keys_json_and_compacted_topic(kafka_broker: KafkaBroker) -> None:
    suffix = uuid.uuid4().hex[:8]
    events, items = f"events-{suffix}", f"items-{suffix}"
    await acreate_topics(kafka_broker.bootstrap, {events: 2, items: 1}, compacted={items})
    await acreate_topics(kafka_broker.bootstrap, {events: 2, items: 1}, compacted={items})  # no-op

    sent = [(f"u{i % 3}", {"user_id": f"u{i % 3}", "item_id": f"i{i}", "n": i}) for i in range(20)]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
        acks="all",
    )
    await producer.start()
    try:
        for key, value in sent:
            await producer.send(events, value, key=key)
        await producer.send_and_wait(items, {"item_id": "i1", "title": "t"}, key="i1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        events,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"test-{suffix}",
        auto_offset_reset="earliest",
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
    )
    await consumer.start()
    got: list[tuple[str, dict[str, object], int]] = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            got += [(m.key, m.value, m.partition) for ms in batches.values() for m in ms]
    finally:
        await consumer.stop()
    assert sorted((k, v["n"]) for k, v, _ in got) == sorted((k, v["n"]) for k, v in sent)
    # keyed partitioning: one user's events all land in one partition
    by_key: dict[str, set[int]] = {}
    for key, _, partition in got:
        by_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values())

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (items, events)]
        )
        assert {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([events, items])} == {
            events: 2,
            items: 1,
        }
    finally:
        await admin.close()
    policy = {res[3]: dict((e[0], e[1]) for e in res[4])["cleanup.policy"] for res in response.resources}
    assert policy == {items: "compact", events: "delete"}


def test_start_is_idempotent(kafka_broker: KafkaBroker) -> None:
    pid = kafka_broker.pid()
    t0 = time.monotonic()
    kafka_broker.start()
    assert time.monotonic() - t0 < 2
    assert kafka_broker.pid() == pid
    assert kafka_broker.is_running()


def test_cli_up_status_down_from_separate_processes(tmp_path: Path) -> None:
    # A private cache dir whose libs point at the shared jars: its own broker home, no second download.
    libs = ensure_jars(Settings().cache_dir)
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "libs").symlink_to(libs, target_is_directory=True)
    env = {**os.environ, "STREAMREC_CACHE_DIR": str(tmp_path)}
    port, controller_port = free_ports(2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        code = "from streams.cli.kafka import app; app()"
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    broker = KafkaBroker.from_home(tmp_path / "kafka" / "broker", libs)
    try:
        assert cli("status").returncode == 1
        up = cli("up", "--port", str(port), "--controller-port", str(controller_port))
        assert up.returncode == 0, up.stderr
        broker = KafkaBroker.from_home(tmp_path / "kafka" / "broker", libs)
        assert broker.port == port and broker.is_running()
        st = cli("status")
        assert st.returncode == 0 and f"running 127.0.0.1:{port}" in st.stdout
        assert cli("up", "--port", str(port), "--controller-port", str(controller_port)).returncode == 0
        down = cli("down")
        assert down.returncode == 0, down.stderr
        assert not broker.is_running() and broker.pid() is None
        assert cli("status").returncode == 1
    finally:
        broker.stop()  # never leak a JVM when an assertion fails midway
