"""User state stamped with the offset of the last event folded into it: replays become no-ops.

At-least-once delivery means a crashed worker's successor re-reads every event after the last
committed offset. The user-state table's changelog, though, may already hold the effect of some
of them. Each table value therefore carries the events-topic offset of the last event applied;
a re-read event at or below it was applied, and its list was delivered before the state was
written (the worker writes state only after the lists are acknowledged), so it is skipped. Events
of one user always come from one partition (they are keyed by user id), so one offset suffices.

A user who waits for items (see :mod:`streams.app.waiting`) has a longer stamp: the events partition
(so a waiting user can be woken without an event of theirs) and the events parked until their item
is on the items topic, each with its original bytes. A parked event's offset is at or below the
stamp, so a replay skips it too: it is handled from the state, once.

>>> value = stamp(41, b"state")
>>> unstamp(value)
(41, b'state')
>>> unstamp(None)
(-1, None)
>>> waits = Stamped(42, None, 3, [Parked(40, 1.5, 2.5, "late-item", b'{"event": 1}')])
>>> Stamped.of(waits.to_bytes()) == waits, unstamp(waits.to_bytes())
(True, (42, None))
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

_OFFSET = struct.Struct("<q")
#: In place of the offset: a waiting user's stamp follows (offsets are never negative).
_WAITS = -2
_WAITS_PREFIX = _OFFSET.pack(_WAITS)
_WAITING = struct.Struct("<qiH")  # offset, events partition, parked events
_PARKED = struct.Struct("<qddHI")  # offset, timestamp, parked at, item id length, value length


@dataclass(frozen=True, slots=True)
class Parked:
    """An event held until its item is on the items topic: its message as read, and when it was parked."""

    offset: int
    timestamp: float  # as Kafka stamped the message (seconds)
    parked_at: float  # the worker's clock (seconds since the epoch)
    item_id: str
    value: bytes


@dataclass
class Stamped:
    """A table value: the last applied offset, the user's serialized state (None: none yet) and, for a
    user waiting for items, the events partition (-1 otherwise) and the parked events, oldest first."""

    offset: int
    state: bytes | None
    partition: int = -1
    parked: list[Parked] = field(default_factory=list)

    @classmethod
    def of(cls, value: bytes | None) -> Stamped:
        if value is None:
            return cls(-1, None)
        (offset,) = _OFFSET.unpack_from(value)
        if offset != _WAITS:
            return cls(offset, value[_OFFSET.size :] or None)
        offset, partition, n = _WAITING.unpack_from(value, _OFFSET.size)
        pos, parked = _OFFSET.size + _WAITING.size, []
        for _ in range(n):
            at, ts, parked_at, n_item, n_value = _PARKED.unpack_from(value, pos)
            pos += _PARKED.size
            item_id = value[pos : pos + n_item].decode("utf-8")
            pos += n_item
            parked.append(Parked(at, ts, parked_at, item_id, value[pos : pos + n_value]))
            pos += n_value
        return cls(offset, value[pos:] or None, partition, parked)

    @property
    def waits(self) -> bool:
        """Whether the partition is kept (the user waits for items)."""
        return self.partition >= 0

    def to_bytes(self) -> bytes:
        state = self.state or b""
        if not self.waits:
            return _OFFSET.pack(self.offset) + state
        parts = [_OFFSET.pack(_WAITS), _WAITING.pack(self.offset, self.partition, len(self.parked))]
        for p in self.parked:
            item = p.item_id.encode("utf-8")
            parts += [_PARKED.pack(p.offset, p.timestamp, p.parked_at, len(item), len(p.value)), item, p.value]
        return b"".join([*parts, state])


def waits(value: bytes) -> bool:
    """Whether a table value is a waiting user's, without decoding it."""
    return value[: _OFFSET.size] == _WAITS_PREFIX


def stamp(offset: int, state: bytes) -> bytes:
    """The table value: the last applied offset, then the user's serialized state."""
    return Stamped(offset, state).to_bytes()


def unstamp(value: bytes | None) -> tuple[int, bytes | None]:
    """``(last applied offset, state)``; ``(-1, None)`` for a user never seen."""
    stamped = Stamped.of(value)
    return stamped.offset, stamped.state


class Unstamped(Mapping[bytes, bytes]):
    """A read-only view of a stamped table that yields the states alone (what the recommender reads); a
    user with parked events only has no state.

    >>> view = Unstamped({b"u1": stamp(7, b"state"), b"u2": Stamped(8, None, 0).to_bytes()})
    >>> view[b"u1"], view.get(b"u2"), view.get(b"u3"), len(view)
    (b'state', None, None, 2)
    """

    def __init__(self, table: Mapping[bytes, bytes]) -> None:
        self._table = table

    def __getitem__(self, key: bytes) -> bytes:
        state = unstamp(self._table.get(key))[1]
        if state is None:
            raise KeyError(key)
        return state

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
