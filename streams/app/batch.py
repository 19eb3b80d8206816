"""What a batch handler takes and gives: input :class:`Record`\\ s in, an :class:`Outbox` out.

A handler (:class:`~streams.app.events.EventsHandler`, :class:`~streams.app.items.ItemsHandler`) turns
one micro-batch of records into an :class:`Outbox`: the messages its batch produced, in the order they
must be delivered, each with the input partition whose events it answers, and the local effects to
apply once they are out. :class:`~streams.app.input.Input` hands it to the worker's
:class:`~streams.app.guarantee.Guarantee`, which publishes it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from faust.types import EventT

Message = tuple[bytes | None, bytes | None]  # key, value (None: a tombstone)


@dataclass(frozen=True, slots=True)
class Record:
    """One input message, whether Faust delivered it or a hole was read for it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds, as Kafka stamped it

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @classmethod
    def of_event(cls, event: EventT[Any]) -> Record:
        m = event.message
        return cls(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)

    @classmethod
    def of_consumer_record(cls, r: ConsumerRecord[bytes, bytes]) -> Record:
        return cls(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp / 1000.0)


def next_offsets(batch: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record.

    >>> next_offsets([Record("t", 0, 7, None, None, 0.0), Record("t", 1, 2, None, None, 0.0)])
    {TopicPartition(topic='t', partition=0): 8, TopicPartition(topic='t', partition=1): 3}
    """
    out: dict[TopicPartition, int] = {}
    for rec in batch:
        out[rec.tp] = max(out.get(rec.tp, 0), rec.offset + 1)
    return out


@dataclass(frozen=True, slots=True)
class Outgoing:
    source: TopicPartition  # the input partition whose events this message answers
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone


@dataclass
class Outbox:
    """One batch's output: messages in delivery order, and what to do locally once they are out.

    >>> box = Outbox()
    >>> box.add(TopicPartition("events", 0), "lists", b"u1", b"A")
    >>> box.add(TopicPartition("events", 1), "dead", None, b"B")
    >>> box.add(TopicPartition("events", 0), "lists", b"u2", b"C")
    >>> box.by_topic()
    [('lists', [(b'u1', b'A'), (b'u2', b'C')]), ('dead', [(None, b'B')])]
    >>> [(tp.partition, [m.value for m in msgs]) for tp, msgs in box.by_source().items()]
    [(0, [b'A', b'C']), (1, [b'B'])]
    """

    messages: list[Outgoing] = field(default_factory=list)
    effects: list[tuple[TopicPartition, Callable[[], None]]] = field(default_factory=list)

    def add(self, source: TopicPartition, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.messages.append(Outgoing(source, topic, key, value))

    def after(self, source: TopicPartition, effect: Callable[[], None]) -> None:
        """Run ``effect`` (a local write, a metric) once ``source``'s messages are published."""
        self.effects.append((source, effect))

    def by_topic(self) -> list[tuple[str, list[Message]]]:
        """The messages per topic, topics in the order they first appear."""
        out: dict[str, list[Message]] = {}
        for m in self.messages:
            out.setdefault(m.topic, []).append((m.key, m.value))
        return list(out.items())

    def by_source(self) -> dict[TopicPartition, list[Outgoing]]:
        out: dict[TopicPartition, list[Outgoing]] = {}
        for m in self.messages:
            out.setdefault(m.source, []).append(m)
        return out

    def published(self, sources: Set[TopicPartition]) -> None:
        for source, effect in self.effects:
            if source in sources:
                effect()


#: A batch handler: one micro-batch of input records in, its output out.
Handler = Callable[[Sequence[Record]], Coroutine[Any, Any, Outbox]]
