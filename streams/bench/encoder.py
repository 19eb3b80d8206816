"""Texts/s and per-request latency of TritonEncoder vs LocalEncoder on the same short texts, same run.

Requests go one after another (``concurrency`` 1) unless asked otherwise, so latency is that of one
request alone; each encoder gets a warm-up request per batch size first. ``triton_url`` measures an
already running server (e.g. a GPU one started with ``--model-config-name=gpu``); without it a
local CPU ``tritonserver`` is started on free ports and stopped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from encoders import Encoder, LocalEncoder, TritonEncoder
from streams.bench import percentiles_ms
from streams.local.kafka import free_port
from streams.local.triton import TritonServer
from streams.local.triton import local_home as triton_home
from streams.settings import Settings


def device_name(device: str) -> str:
    """The accelerator's name for ``cuda[:n]``, the CPU's otherwise."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    from streams.bench import environment

    return f"cpu: {environment()['processor']}"


@contextlib.contextmanager
def local_triton_server(settings: Settings) -> Iterator[str]:
    """A throw-away CPU Triton on free ports, serving the cached model repository; yields its gRPC URL."""
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-triton-") as home:
        repository = triton_home(settings.cache_dir) / "model_repository"
        server = TritonServer(
            home=Path(home),
            model_repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            model=settings.triton_model,
        )
        server.ensure_model_repository()
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def _time_requests(
    encoder: Encoder, texts: Sequence[str], batch: int, seconds: float, min_requests: int, concurrency: int
) -> dict[str, float]:
    """Requests of ``batch`` texts (cycling through ``texts``) for about ``seconds``, ``concurrency`` at a time."""
    await encoder.encode(texts[:batch])  # warm-up: model load, first-call allocations, channel set-up
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    cursor = 0

    async def client() -> None:
        nonlocal cursor
        while time.perf_counter() < deadline or len(latencies) < min_requests:
            start = cursor % len(texts)
            cursor += batch
            chunk = [texts[(start + i) % len(texts)] for i in range(batch)]
            t0 = time.perf_counter()
            await encoder.encode(chunk)
            latencies.append(time.perf_counter() - t0)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    rate = batch * len(latencies) / elapsed
    return {"requests": float(len(latencies)), "texts_per_s": rate, **percentiles_ms(latencies)}


async def _bench(
    texts: Sequence[str], triton_url: str, device: str, batches: Sequence[int], seconds: float, concurrency: int
) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {"local": {}, "triton": {}}
    for batch in batches:
        # One request is one model call on either side: both encoders chunk by their batch_size.
        local = LocalEncoder(batch_size=batch, device=device)
        triton = TritonEncoder(triton_url, batch_size=batch, max_concurrency=concurrency)
        try:
            for name, encoder in (("local", local), ("triton", triton)):
                results[name][str(batch)] = await _time_requests(
                    encoder, texts, batch, seconds, min_requests=3, concurrency=concurrency
                )
        finally:
            await local.close()
            await triton.close()
    return results


def bench_encoder(
    texts: Sequence[str],
    settings: Settings,
    *,
    triton_url: str | None = None,
    device: str = "cpu",
    batches: Sequence[int] = (1, 32, 128),
    seconds: float = 5.0,
    concurrency: int = 1,
) -> dict[str, Any]:
    """``{"device", "results": {"local"|"triton": {batch: {texts_per_s, p50_ms, p99_ms, ...}}}, "overhead"}``.

    ``overhead`` is Triton's median latency over the in-process one, minus 1, per batch size.
    """
    server = contextlib.nullcontext(triton_url) if triton_url else local_triton_server(settings)
    with server as url:
        results = asyncio.run(_bench(texts, url, device, batches, seconds, concurrency))
    overhead = {b: results["triton"][b]["p50_ms"] / results["local"][b]["p50_ms"] - 1 for b in results["local"]}
    return {
        "device": device_name(device),
        "local_device": device,
        "triton": {"url": triton_url or "local tritonserver (CPU config)", "started_here": triton_url is None},
        "texts": len(texts),
        "mean_text_chars": sum(map(len, texts)) / len(texts),
        "seconds_per_case": seconds,
        "concurrency": concurrency,
        "python": platform.python_version(),
        "results": results,
        "overhead": overhead,
    }
