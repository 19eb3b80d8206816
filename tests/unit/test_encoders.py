"""Unit tests of the encoders' own logic: pooling math, TritonEncoder batching/retries, export, launcher."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from encoders import EMBEDDING_DIM, EncoderError, LocalEncoder, TritonEncoder, export_model_repository
from encoders._pooling import mean_pool_l2_normalize
from streams.local.triton import TritonServer, find_tritonserver

# --- pooling ---------------------------------------------------------------------------------


def test_pooling_ignores_padding_and_normalises() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[2.0, 0.0], [5.0, 5.0], [5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = mean_pool_l2_normalize(hidden, mask)
    expected = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, expected)


def test_pooling_all_padding_row_is_zero_not_nan() -> None:
    out = mean_pool_l2_normalize(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    assert torch.equal(out, torch.zeros(1, 3))


# --- TritonEncoder with a fake client --------------------------------------------------------


def _vec(text: str) -> np.ndarray:
    v = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    v[int(text.removeprefix("t")) % EMBEDDING_DIM] = 1.0
    return v


class _Result:
    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def as_numpy(self, name: str) -> np.ndarray:
        assert name == "EMBEDDING"
        return self._arr


class FakeClient:
    """Stands in for tritonclient.grpc.aio.InferenceServerClient: one-hot rows, scripted failures."""

    def __init__(self, failures: list[Exception] | None = None, width: int = EMBEDDING_DIM) -> None:
        self.failures = list(failures or [])
        self.width = width
        self.batches: list[list[str]] = []
        self.in_flight = self.max_in_flight = 0
        self.closed = False

    async def infer(
        self, model_name: str, inputs: list[Any], outputs: Any = None, client_timeout: Any = None
    ) -> _Result:
        assert model_name == "text_encoder" and client_timeout == 30.0
        (inp,) = inputs
        assert inp.name() == "TEXT" and inp.datatype() == "BYTES"
        n = inp.shape()[0]
        assert inp.shape() == [n, 1]
        texts = [b.decode("utf-8") for b in deserialize_bytes_tensor(inp._get_content())]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if self.failures:
                raise self.failures.pop(0)
            self.batches.append(texts)
            return _Result(np.stack([_vec(t) for t in texts])[:, : self.width])
        finally:
            self.in_flight -= 1

    async def is_model_ready(self, model: str, client_timeout: Any = None) -> bool:
        return True

    async def close(self) -> None:
        self.closed = True


def _encoder(client: FakeClient, **kw: Any) -> TritonEncoder:
    enc = TritonEncoder(backoff_s=0.001, **kw)
    enc._client = client
    return enc


def _unavailable() -> InferenceServerException:
    return InferenceServerException("connection refused", status="StatusCode.UNAVAILABLE")


async def test_batches_keep_order_and_respect_concurrency() -> None:
    client = FakeClient()
    texts = [f"t{i}" for i in range(25)]
    async with _encoder(client, batch_size=4, max_concurrency=2) as enc:
        out = await enc.encode(texts)
    assert out.shape == (25, EMBEDDING_DIM) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.stack([_vec(t) for t in texts]))
    assert sorted(len(b) for b in client.batches) == [1] + [4] * 6
    assert client.max_in_flight == 2
    assert client.closed


async def test_empty_input_sends_nothing() -> None:
    client = FakeClient()
    out = await _encoder(client).encode([])
    assert out.shape == (0, EMBEDDING_DIM) and out.dtype == np.float32
    assert client.batches == []


async def test_a_str_is_rejected() -> None:
    with pytest.raises(TypeError):
        await _encoder(FakeClient()).encode("t1")


async def test_retries_unavailable_and_timeouts_then_succeeds() -> None:
    client = FakeClient([_unavailable(), TimeoutError()])
    out = await _encoder(client, retries=2).encode(["t3"])
    assert out[0, 3] == 1.0


async def test_gives_up_after_last_try() -> None:
    client = FakeClient([_unavailable() for _ in range(3)])
    with pytest.raises(EncoderError, match="unavailable after 3 tries"):
        await _encoder(client, retries=2).encode(["t1"])
    assert client.failures == []


async def test_non_retryable_error_fails_at_once() -> None:
    bad = InferenceServerException("no such model", status="StatusCode.NOT_FOUND")
    client = FakeClient([bad, _unavailable()])
    with pytest.raises(EncoderError, match="no such model"):
        await _encoder(client).encode(["t1"])
    assert len(client.failures) == 1


async def test_wrong_width_is_an_error() -> None:
    with pytest.raises(EncoderError, match="returned shape"):
        await _encoder(FakeClient(width=8)).encode(["t1"])


async def test_ready_is_false_when_nothing_listens() -> None:
    async with TritonEncoder("127.0.0.1:1", timeout_s=2) as enc:
        assert await enc.ready() is False


async def test_local_encoder_empty_input_loads_nothing() -> None:
    enc = LocalEncoder()
    assert (await enc.encode([])).shape == (0, EMBEDDING_DIM)
    assert enc._model is None


# --- model repository ------------------------------------------------------------------------


def test_export_writes_cpu_and_gpu_configs_and_weights(tmp_path: Path) -> None:
    repo = export_model_repository(tmp_path / "repo", model_name="enc", max_batch_size=32)
    model = repo / "enc"
    cpu = (model / "config.pbtxt").read_text()
    gpu = (model / "configs" / "gpu.pbtxt").read_text()
    for cfg in (cpu, gpu):
        assert "max_batch_size: 32" in cfg and "dynamic_batching" in cfg and "$" not in cfg
        assert 'name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ]' in cfg
        assert 'name: "EMBEDDING", data_type: TYPE_FP32, dims: [ 384 ]' in cfg
    assert "KIND_CPU" in cpu and "KIND_GPU" in gpu
    version = model / "1"
    assert (version / "model.py").is_file() and (version / "_pooling.py").is_file()
    assert (version / "minilm" / "model.safetensors").stat().st_size > 80_000_000
    assert (version / "minilm" / "tokenizer.json").is_file()
    # exporting again over the same folder works (refresh in place)
    export_model_repository(repo, model_name="enc", max_batch_size=32)


# --- launcher --------------------------------------------------------------------------------


def test_find_tritonserver_explains_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TRITON_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="run `make`"):
        find_tritonserver()


def test_stale_pidfile_is_not_running_and_stop_is_a_noop(tmp_path: Path) -> None:
    server = TritonServer(home=tmp_path, model_repository=tmp_path / "repo")
    assert not server.is_running()
    server.pid_file.write_text("999999999\n")
    assert not server.is_running()
    server.stop()
    assert not server.pid_file.exists()
    assert server.url == "127.0.0.1:8001"
