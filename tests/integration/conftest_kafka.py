"""Session fixture: one real Apache Kafka broker (KRaft) on free ports, shared by all integration tests.

Import ``kafka_broker`` into ``tests/conftest.py`` (or load this module with ``-p``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.local.kafka import KafkaBroker, ensure_jars, free_port
from streams.settings import Settings


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (free_port() alone may hand out the same one twice)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running broker in a throw-away home; jars come from the shared cache (fetched once)."""
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        home=tmp_path_factory.mktemp("kafka"),
        libs=ensure_jars(Settings().cache_dir),
        port=port,
        controller_port=controller_port,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
