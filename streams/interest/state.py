"""Per-user state: what the worker remembers about one user, compact enough for a changelog."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_HEADER = struct.Struct("<BHIdd")  # version, dim, events seen, interest weight, last event ts
_VERSION = 1


@dataclass
class UserState:
    """Interest vector (decayed sum of engaged item vectors, float16) plus recent history.

    Stored as bytes in a Faust table, so :meth:`to_bytes` is the changelog format.

    >>> s = UserState.empty(4)
    >>> s.interest[:] = [1, 0, 0, 0]; s.history.append("i1"); s.events = 1
    >>> t = UserState.from_bytes(s.to_bytes())
    >>> (t.history, t.events, t.interest.tolist())
    (['i1'], 1, [1.0, 0.0, 0.0, 0.0])
    """

    interest: npt.NDArray[np.float16]
    weight: float = 0.0
    events: int = 0
    last_ts: float = 0.0
    history: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, dim: int) -> UserState:
        return cls(interest=np.zeros(dim, dtype=np.float16))

    @property
    def is_cold(self) -> bool:
        """No positive engagement yet: the interest vector says nothing."""
        return self.weight <= 0.0

    def snapshot(self) -> UserState:
        """A copy that later updates of this state do not change."""
        return UserState(self.interest.copy(), self.weight, self.events, self.last_ts, list(self.history))

    def to_bytes(self) -> bytes:
        hist = "\x1f".join(self.history).encode("utf-8")
        head = _HEADER.pack(_VERSION, len(self.interest), self.events, self.weight, self.last_ts)
        return head + self.interest.astype("<f2").tobytes() + hist

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserState:
        version, dim, events, weight, last_ts = _HEADER.unpack_from(raw)
        if version != _VERSION:
            raise ValueError(f"unknown user-state version {version}")
        start = _HEADER.size
        vec = np.frombuffer(raw, dtype="<f2", count=dim, offset=start).astype(np.float16)
        hist_raw = raw[start + 2 * dim :]
        history = hist_raw.decode("utf-8").split("\x1f") if hist_raw else []
        return cls(interest=vec, weight=weight, events=events, last_ts=last_ts, history=history)
