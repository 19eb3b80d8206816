"""Real servers for the integration tests, started on free ports: Kafka, and Triton on the exported model repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from encoders import export_model_repository
from streams.local.kafka import KafkaBroker, SaslSsl, ensure_jars
from streams.local.triton import TritonServer
from streams.settings import Settings
from streams.testing import free_ports


def running_kafka(home: Path, security: SaslSsl | None = None) -> Iterator[KafkaBroker]:
    """A broker in ``home`` on free ports (jars from the shared cache, fetched once); stopped when the
    generator closes."""
    port, controller_port = free_ports(2)
    broker = KafkaBroker(home, ensure_jars(Settings().cache_dir), port, controller_port, security=security)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def running_triton(root: Path, grpc_tls: tuple[Path, Path] | None = None) -> Iterator[TritonServer]:
    """A server on the exported repository under ``root``, on free ports; stopped when the generator closes."""
    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(
        home=root / "home",
        model_repository=export_model_repository(root / "model_repository"),
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        grpc_tls=grpc_tls,
    )
    server.start(timeout_s=180)
    try:
        yield server
    finally:
        server.stop()
