"""What is on the ``items`` topic versus what is embedded: the items waiting for an embedding, and since when.

Every worker follows the ``items`` topic beside ``<items>-vectors`` (see :class:`~streams.app.catalog.CatalogLoader`)
and records each version here; an item waits from the Kafka timestamp of its newest version on ``items``
until that same version (compared by a digest of its canonical JSON) arrives with its vector. No Kafka in
here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from streams.contracts import Item, encode


def digest(item: Item) -> bytes:
    """A short fingerprint of one version of an item (its canonical JSON)."""
    return hashlib.blake2b(encode(item), digest_size=8).digest()


@dataclass
class CatalogProgress:
    """Items on the topic, embedded, and waiting in between.

    >>> p = CatalogProgress()
    >>> a = Item(item_id="a", title="A", created_at=0)
    >>> p.on_topic(a, ts=100.0); p.on_topic(Item(item_id="b", title="B", created_at=0), ts=130.0)
    >>> p.embedded(a)
    >>> p.live, p.waiting, p.oldest_wait_s(now=160.0), "b" in p, "a" in p
    (2, 1, 30.0, True, False)
    >>> p.on_topic_deleted("b")
    >>> p.waiting, p.oldest_wait_s(now=160.0)
    (0, 0.0)
    """

    #: item id -> digest of its newest version on the topic (tombstoned ones removed)
    _topic: dict[str, bytes] = field(default_factory=dict)
    #: item id -> digest of the version last embedded
    _embedded: dict[str, bytes] = field(default_factory=dict)
    #: item id -> (digest waited for, since): the items whose newest version has no vector yet
    _waiting: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    #: ids whose newest record on the topic is a tombstone or ``available: false``
    _retired: set[str] = field(default_factory=set)

    def on_topic(self, item: Item, ts: float) -> None:
        """A version of ``item`` on the ``items`` topic, stamped ``ts`` by Kafka."""
        version = digest(item)
        self._topic[item.item_id] = version
        if item.available:
            self._retired.discard(item.item_id)
        else:
            self._retired.add(item.item_id)
        if self._embedded.get(item.item_id) == version:
            self._waiting.pop(item.item_id, None)
        else:  # an item changed while it waited keeps waiting from its first version
            since = self._waiting.get(item.item_id, (b"", ts))[1]
            self._waiting[item.item_id] = (version, since)

    def on_topic_deleted(self, item_id: str) -> None:
        """A tombstone on ``items``: nothing to wait for any more."""
        self._topic.pop(item_id, None)
        self._waiting.pop(item_id, None)
        self._retired.add(item_id)

    def available(self, item_id: str) -> bool | None:
        """Whether the item's newest record on the topic makes it listable; ``None`` if none was seen."""
        if item_id in self._retired:
            return False
        return True if item_id in self._topic else None

    def embedded(self, item: Item) -> None:
        """``item``'s version arrived with its vector."""
        version = digest(item)
        self._embedded[item.item_id] = version
        waited = self._waiting.get(item.item_id)
        if waited is not None and waited[0] == version:
            del self._waiting[item.item_id]

    def vector_deleted(self, item_id: str) -> None:
        """A tombstone on ``<items>-vectors``: a version sent again is embedded again."""
        self._embedded.pop(item_id, None)

    def __contains__(self, item_id: object) -> bool:
        """Whether ``item_id`` is on the topic and waiting for its first vector (never embedded yet)."""
        return item_id in self._waiting and item_id not in self._embedded

    @property
    def live(self) -> int:
        """Items on the ``items`` topic (their newest version not a tombstone)."""
        return len(self._topic)

    @property
    def waiting(self) -> int:
        """Items whose newest version on the topic has no vector yet."""
        return len(self._waiting)

    def oldest_wait_s(self, now: float) -> float:
        """How long the item waiting longest has waited (0 when none waits)."""
        if not self._waiting:
            return 0.0
        return max(0.0, now - min(since for _, since in self._waiting.values()))
