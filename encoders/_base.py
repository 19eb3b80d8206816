"""The interface every text encoder implements, and the one error type callers catch."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

#: Width of the all-MiniLM-L6-v2 sentence embedding.
EMBEDDING_DIM = 384


class EncoderError(RuntimeError):
    """Encoding failed for good (server unreachable after retries, bad reply, model missing)."""


class Encoder(abc.ABC):
    """Turns texts into L2-normalised float32 rows; usable as ``async with``."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Width of one embedding row."""

    @abc.abstractmethod
    async def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Return a ``[len(texts), dim]`` float32 array of unit-length rows (``(0, dim)`` for no texts)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections / model memory; the encoder must not be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _empty(self) -> npt.NDArray[np.float32]:
        return np.zeros((0, self.dim), dtype=np.float32)
