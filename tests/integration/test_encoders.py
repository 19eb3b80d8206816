"""TritonEncoder against a real tritonserver, checked against the in-process LocalEncoder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from encoders import EMBEDDING_DIM, EncoderError, LocalEncoder, TritonEncoder
from streams.local.triton import TritonServer
from streams.testing import free_ports

pytestmark = pytest.mark.integration

TEXTS = [
    "Wireless noise-cancelling headphones",
    "a",
    "Ünïcødé: café, naïve, 日本語のテキスト, emoji 🚀🔥, Ελληνικά",
    "long " * 400,  # truncated at max_length on both sides
    "",
]


@pytest.fixture(scope="session")
async def local() -> AsyncIterator[LocalEncoder]:
    async with LocalEncoder(batch_size=16) as enc:
        yield enc


@pytest.fixture
async def remote(triton_server: TritonServer) -> AsyncIterator[TritonEncoder]:
    async with TritonEncoder(triton_server.url, batch_size=16) as enc:
        yield enc


def _check(emb: np.ndarray, n: int) -> None:
    assert emb.shape == (n, EMBEDDING_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


async def test_ready(remote: TritonEncoder) -> None:
    assert await remote.ready()


async def test_triton_matches_local(remote: TritonEncoder, local: LocalEncoder) -> None:
    a, b = await remote.encode(TEXTS), await local.encode(TEXTS)
    _check(a, len(TEXTS))
    _check(b, len(TEXTS))
    assert np.abs(a - b).max() <= 1e-4


async def test_batch_larger_than_batch_size(remote: TritonEncoder, local: LocalEncoder) -> None:
    texts = [f"catalog item {i}: {'red' if i % 2 else 'blue'} cotton shirt" for i in range(50)]
    a, b = await remote.encode(texts), await local.encode(texts)
    _check(a, 50)
    assert np.abs(a - b).max() <= 1e-4
    # a row does not depend on what it was batched with
    single = await remote.encode(texts[37:38])
    assert np.abs(single[0] - a[37]).max() <= 1e-4


async def test_empty_input(remote: TritonEncoder, local: LocalEncoder) -> None:
    for enc in (remote, local):
        assert (await enc.encode([])).shape == (0, EMBEDDING_DIM)


async def test_server_down_gives_encoder_error_after_retries() -> None:
    (port,) = free_ports(1)  # nothing listens there
    async with TritonEncoder(f"127.0.0.1:{port}", retries=2, backoff_s=0.01, timeout_s=5) as enc:
        assert not await enc.ready()
        with pytest.raises(EncoderError, match="unavailable after 3 tries"):
            await enc.encode(["hello"])
