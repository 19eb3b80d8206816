"""User state stamped with the offset of the last event folded into it: replays become no-ops.

At-least-once delivery means a crashed worker's successor re-reads every event after the last
committed offset. The user-state table's changelog, though, may already hold the effect of some
of them. Each table value therefore carries the events-topic offset of the last event applied;
a re-read event at or below it was applied, and its list was delivered before the state was
written (the worker writes state only after the lists are acknowledged), so it is skipped. Events
of one user always come from one partition (they are keyed by user id), so one offset suffices.

>>> value = stamp(41, b"state")
>>> unstamp(value)
(41, b'state')
>>> unstamp(None)
(-1, None)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping

_OFFSET = struct.Struct("<q")


def stamp(offset: int, state: bytes) -> bytes:
    """The table value: the last applied offset, then the user's serialized state."""
    return _OFFSET.pack(offset) + state


def unstamp(value: bytes | None) -> tuple[int, bytes | None]:
    """``(last applied offset, state)``; ``(-1, None)`` for a user never seen."""
    if value is None:
        return -1, None
    return _OFFSET.unpack_from(value)[0], value[_OFFSET.size :]


class Unstamped(Mapping[bytes, bytes]):
    """A read-only view of a stamped table that yields the states alone (what the recommender reads).

    >>> view = Unstamped({b"u1": stamp(7, b"state")})
    >>> view[b"u1"], view.get(b"u2"), len(view)
    (b'state', None, 1)
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
