"""The two user-state stores: a Faust table's (at-least-once) and a partitioned dict (exactly-once).

Both are read as a mapping (user key to stamped state) and written with ``put``, which names the
input partition the user's events live on.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, MutableMapping


class UserStates(Mapping[bytes, bytes]):
    """The stamped user states a worker holds (see :mod:`streams.app.stamps`), by user key."""

    @abstractmethod
    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Set (``None``: delete) the state of ``key``, whose events live on input ``partition``."""


class _States(UserStates):
    def __init__(self, data: MutableMapping[bytes, bytes]) -> None:
        self.data = data

    def __getitem__(self, key: bytes) -> bytes:
        return self.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class TableStates(_States):
    """The user states in a Faust table's in-memory store; Faust's recovery restores them."""

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


class PartitionedStates(_States):
    """An in-memory store that knows each key's input partition, so a revoked partition's states can go.

    >>> states = PartitionedStates()
    >>> states.put(0, b"u1", b"s1"); states.put(1, b"u2", b"s2"); states.put(1, b"u3", b"s3")
    >>> states.evict(1), dict(states)
    (2, {b'u1': b's1'})
    >>> states.put(0, b"u1", None); len(states)
    0
    """

    def __init__(self) -> None:
        super().__init__({})
        self._keys: dict[int, set[bytes]] = {}

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
            self._keys.get(partition, set()).discard(key)
        else:
            self.data[key] = value
            self._keys.setdefault(partition, set()).add(key)

    def evict(self, partition: int) -> int:
        """Drop the states of ``partition``'s users; returns how many there were."""
        keys = self._keys.pop(partition, set())
        for key in keys:
            self.data.pop(key, None)
        return len(keys)
