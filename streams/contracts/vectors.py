"""The wire codec of item vectors in ``<items>-vectors`` messages: little-endian float32, base64.

>>> import numpy as np
>>> vector_of(b64_vector(np.array([1.0, -0.5])))
array([ 1. , -0.5], dtype=float32)
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def b64_vector(vec: np.ndarray) -> str:
    return base64.b64encode(vec.astype("<f4").tobytes()).decode()


def vector_of(b64: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The vector of :func:`b64_vector`'s text."""
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")
