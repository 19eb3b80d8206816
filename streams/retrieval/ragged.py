"""Ragged lists of rows (one array per event) flattened for array work."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.int64]


def flatten(lists: Sequence[Rows]) -> tuple[Rows, Rows]:
    """``(owner, value)`` of every value of ``lists``, in order: ``owner`` is the index of its list.

    >>> owner, value = flatten([np.array([5, 6]), np.array([], np.int64), np.array([7])])
    >>> owner.tolist(), value.tolist()
    ([0, 0, 2], [5, 6, 7])
    """
    lengths = np.fromiter(map(len, lists), np.int64, len(lists))
    values = np.concatenate(lists).astype(np.int64, copy=False) if len(lists) else np.zeros(0, np.int64)
    return np.repeat(np.arange(len(lists)), lengths), values
