"""Session fixtures of the integration tests: one real Apache Kafka broker (KRaft) and one real Triton
server, each started once per session on free ports and shared by the tests that ask for them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.harness import WorkerProcess
from streams.local.kafka import KafkaBroker
from streams.local.triton import TritonServer
from tests.integration.servers import running_kafka, running_triton


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running broker in a throw-away home; jars come from the shared cache (fetched once)."""
    yield from running_kafka(tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    yield from running_triton(tmp_path_factory.mktemp("triton"))


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Every worker a test starts, stopped at teardown whatever happened."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()
