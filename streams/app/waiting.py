"""The users a worker holds who wait for items, so that they can be woken without an event of theirs.

Two things wait in a user's state (see :mod:`streams.app.stamps`):

* **parked events**: an event whose item is not on the items topic yet. It is handled, its list made,
  once the item is there; after ``STREAMREC_UNKNOWN_ITEM_TIMEOUT_S`` (the worker's clock, from when it was
  parked) it goes to the dead-letter topic as ``unknown_item``, with its original bytes.
* **held interest updates**: an event whose item is on the items topic but has no vector yet was
  handled at once; the interest update waits (:class:`~streams.recommender.Recommender`) and is folded
  in once the vector is there.

:class:`Waiting` is an index of the user states that say so: kept up to date by the worker's own state
writes, and rebuilt from the whole store after a rebalance (whose restore writes states behind it)
and every :data:`REBUILD_S` as a safety net (a scan that decodes only the waiting users' values).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

from streams.app.stamps import Stamped, waits

#: Longest time between two full rebuilds of the index.
REBUILD_S = 30.0
#: How often a worker looks for waiting users to wake (cheap when none is due).
WAKE_S = 1.0


@dataclass(frozen=True, slots=True)
class Waiter:
    """What one user waits for."""

    partition: int  # the user's events partition
    parked: tuple[tuple[str, float], ...]  # (item id, parked at) of each parked event
    held: tuple[str, ...]  # the items whose vector its held interest updates wait for


class Waiting:
    """The waiting users of a worker's user-state store, by key.

    >>> from streams.app.stamps import Parked
    >>> w = Waiting(held_items=lambda state: [])
    >>> w.note(b"u1", Stamped(5, None, 2, [Parked(5, 0.0, 100.0, "late", b"{}")]).to_bytes())
    >>> w.events(), w.oldest_parked_at()
    (1, 100.0)
    >>> w.due({2}, arrived=lambda item: False, embedded=lambda item: False, expired_before=50.0)
    []
    >>> w.due({2}, arrived=lambda item: item == "late", embedded=lambda item: False, expired_before=50.0)
    [b'u1']
    >>> w.due({2}, arrived=lambda item: False, embedded=lambda item: False, expired_before=150.0)
    [b'u1']
    >>> w.due({0, 1}, arrived=lambda item: True, embedded=lambda item: True, expired_before=150.0)
    []
    >>> w.note(b"u1", Stamped(6, b"state").to_bytes()); w.events()
    0
    """

    def __init__(self, held_items: Callable[[bytes], list[str]], clock: Callable[[], float] = time.monotonic) -> None:
        self.held_items = held_items
        self.clock = clock
        self.users: dict[bytes, Waiter] = {}
        self._events = 0  # parked events, over all users
        self._built: tuple[object, float] | None = None  # (generation, when) of the last rebuild

    def note(self, key: bytes, value: bytes | None) -> None:
        """``key``'s state was written (``None``: deleted)."""
        old = self.users.pop(key, None)
        if old is not None:
            self._events -= len(old.parked)
        if value is None or not waits(value):
            return
        stamped = Stamped.of(value)
        held = tuple(self.held_items(stamped.state)) if stamped.state else ()
        parked = tuple((p.item_id, p.parked_at) for p in stamped.parked)
        self.users[key] = Waiter(stamped.partition, parked, held)
        self._events += len(parked)

    def rebuild(self, states: Mapping[bytes, bytes], generation: object) -> None:
        """From the whole store, when the consumer ``generation`` changed or :data:`REBUILD_S` passed."""
        now = self.clock()
        if self._built is not None and self._built[0] == generation and now - self._built[1] < REBUILD_S:
            return
        self.users, self._events = {}, 0
        for key, value in states.items():
            if waits(value):
                self.note(key, value)
        self._built = (generation, now)

    def due(
        self,
        partitions: Container[int],
        arrived: Callable[[str], bool],
        embedded: Callable[[str], bool],
        expired_before: float,
    ) -> list[bytes]:
        """The users of ``partitions`` with something to do: a parked event whose item ``arrived`` (is on the
        items topic) or that was parked before ``expired_before``, or a held update whose item is
        ``embedded`` now."""
        return [
            key for key, w in self.users.items()
            if w.partition in partitions and (
                any(arrived(item) or at < expired_before for item, at in w.parked) or any(map(embedded, w.held))
            )
        ]

    def events(self) -> int:
        """Parked events."""
        return self._events

    def oldest_parked_at(self) -> float | None:
        return min((at for w in self.users.values() for _, at in w.parked), default=None)
