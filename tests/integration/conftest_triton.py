"""Session fixture: the exported model repository served by a real tritonserver on free ports.

Import ``triton_server`` into a conftest (``from tests.integration.conftest_triton import triton_server``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from encoders import export_model_repository
from streams.local.triton import TritonServer


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    yield from running_triton(tmp_path_factory.mktemp("triton"))
