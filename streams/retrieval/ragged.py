"""Ragged lists of rows (one array per event) flattened for array work, and keys seen first."""

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


def first_occurrences(keys: Rows) -> npt.NDArray[np.bool_]:
    """Whether each key (``>= 0``) is the first of its value.

    >>> first_occurrences(np.array([3, 1, 3, 2, 1])).tolist()
    [True, True, False, True, False]
    """
    # One plain sort of (key, position) pairs packed in an int64 (far faster than a stable argsort).
    n = len(keys)
    pairs = np.sort(keys * n + np.arange(n))
    first = np.ones(n, bool)
    first[pairs[1:] % n] = pairs[1:] // n != pairs[:-1] // n
    return first
