"""Shared fixtures: the real Kafka broker and Triton server, started once per session on free ports."""

from tests.integration.conftest_kafka import free_ports, kafka_broker
from tests.integration.conftest_triton import triton_server

__all__ = ["free_ports", "kafka_broker", "triton_server"]
