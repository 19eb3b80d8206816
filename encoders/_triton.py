"""Remote encoder: the ``text_encoder`` model on a Triton server, over gRPC (asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from encoders._base import EMBEDDING_DIM, Encoder, EncoderError

INPUT_NAME = "TEXT"
OUTPUT_NAME = "EMBEDDING"
# worth another try: the server is (re)starting or overloaded; anything else will fail again
_RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})


class TritonEncoder(Encoder):
    """Encode by calling Triton; batches of ``batch_size`` texts go out concurrently.

    At most ``max_concurrency`` requests are in flight, so a big catalog does not queue so much
    work on the server that the later requests time out.

    >>> enc = TritonEncoder("127.0.0.1:8001", batch_size=2)
    >>> enc.dim, enc.url
    (384, '127.0.0.1:8001')
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model: str = "text_encoder",
        batch_size: int = 64,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        *,
        max_concurrency: int = 4,
        ssl: bool = False,
        root_certificates: str | None = None,
    ) -> None:
        if batch_size < 1 or retries < 0 or max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be >= 1, retries >= 0")
        self.url = url
        self.model = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        #: gRPC over TLS; ``root_certificates``: PEM file of the CA to trust (None: the system's roots)
        self.ssl = ssl
        self.root_certificates = root_certificates
        self._client: Any = None  # created in the running loop: a grpc.aio channel is bound to its loop

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def _get_client(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as grpcclient

            self._client = grpcclient.InferenceServerClient(
                self.url, ssl=self.ssl, root_certificates=self.root_certificates
            )
        return self._client

    async def ready(self) -> bool:
        """Whether the server answers and the model is loaded (never raises)."""
        try:
            return bool(await self._get_client().is_model_ready(self.model, client_timeout=self.timeout_s))
        except Exception:
            return False

    async def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one str")
        if not texts:
            return self._empty()
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(chunk: Sequence[str]) -> npt.NDArray[np.float32]:
            async with limit:
                return await self._infer_with_retries(chunk)

        chunks = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        tasks = [asyncio.ensure_future(one(c)) for c in chunks]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one batch failed for good: do not leave the others running
                task.cancel()
            raise
        return np.concatenate(parts)

    async def _infer_with_retries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        from tritonclient.utils import InferenceServerException

        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return await self._infer(texts)
            except InferenceServerException as e:
                if e.status() not in _RETRYABLE:
                    raise EncoderError(f"Triton {self.url} model {self.model!r} failed: {e}") from e
                last = f"{e.status()}: {e.message()}"
            except TimeoutError:
                last = f"no reply within {self.timeout_s}s"
        raise EncoderError(
            f"Triton at {self.url} (model {self.model!r}) unavailable after {self.retries + 1} tries: {last}"
        )

    async def _infer(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import tritonclient.grpc.aio as grpcclient

        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        inp = grpcclient.InferInput(INPUT_NAME, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        out = grpcclient.InferRequestedOutput(OUTPUT_NAME)
        # asyncio.timeout as well as the gRPC deadline: also bounds waiting for channel setup
        async with asyncio.timeout(self.timeout_s + 1.0):
            result = await self._get_client().infer(self.model, [inp], outputs=[out], client_timeout=self.timeout_s)
        emb = result.as_numpy(OUTPUT_NAME)
        if emb is None or emb.shape != (len(texts), self.dim):
            shape = None if emb is None else emb.shape
            raise EncoderError(f"Triton model {self.model!r} returned shape {shape}, want {(len(texts), self.dim)}")
        return np.asarray(emb, dtype=np.float32)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
