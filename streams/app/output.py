"""What a batch sends, and the two ways it reaches the broker: acknowledged, or in a transaction.

An agent's work returns an :class:`Outbox`: the messages its batch produced, in the order they must
be delivered, each with the input partition whose events it answers, and the local effects to apply
once they are out. :class:`~streams.app.offsets.Input` hands it to an :class:`Output`:

* :class:`Delivery` (at-least-once) sends topic after topic, each acknowledged before the next; the
  input offsets are committed afterwards, on their own (a crash in between replays the batch).
* :class:`~streams.app.transactions.Transactions` (exactly-once) commits each input partition's
  messages together with its input offset in one Kafka transaction.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import TopicPartition

log = logging.getLogger(__name__)

Message = tuple[bytes | None, bytes]  # key, value


@dataclass(frozen=True, slots=True)
class Outgoing:
    source: TopicPartition  # the input partition whose events this message answers
    topic: str
    key: bytes | None
    value: bytes


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

    def add(self, source: TopicPartition, topic: str, key: bytes | None, value: bytes) -> None:
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


class Output(ABC):
    """Where an :class:`Outbox` goes."""

    #: True if :meth:`publish` commits the input offsets with the output (Input then commits nothing).
    commits_offsets: bool = False

    async def ready(self, tp: TopicPartition) -> bool:
        """Wait until ``tp``'s output can be published and its committed offset is final for this worker
        (no earlier owner can move it); False if ``tp`` was taken away meanwhile."""
        return True  # nothing to wait for unless the output commits the offsets

    @abstractmethod
    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        """Send ``outbox``; ``offsets`` are the next offsets to read after the batch, per input partition.

        Returns the input partitions whose messages are out. A partition left out sent nothing (its
        batch was taken in a consumer ``generation`` before a rebalance, or its transaction failed);
        its events are read again, by whoever owns the partition now.
        """


class Delivery(Output):
    """At-least-once: topic after topic, each waited on until the broker acknowledged all of it."""

    def __init__(self, topics: Mapping[str, faust.TopicT]) -> None:
        self.topics = topics

    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        for topic, messages in outbox.by_topic():
            await deliver(self.topics[topic], messages)
        return set(offsets)


async def deliver(topic: faust.TopicT, messages: Sequence[Message], max_backoff_s: float = 30.0) -> None:
    """Send ``(key, value)`` messages and wait until the broker has them all, re-sending what failed.

    A message whose acknowledgement was lost may arrive twice; none is dropped (at-least-once).
    """
    pending = list(messages)
    delay = 0.5
    while pending:
        futures: list[Any] = []
        try:
            for key, value in pending:
                futures.append(await topic.send(key=key, value=value))
        except Exception as exc:  # the producer refused outright: the rest was never handed over
            log.warning("send to %s failed (%s); retrying", topic.get_topic_name(), exc)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [m for m, r in zip(pending, results, strict=False) if isinstance(r, BaseException)]
        pending = failed + pending[len(futures) :]
        if pending:
            name = topic.get_topic_name()
            log.warning("%d messages to %s not acknowledged; re-sending in %.1f s", len(pending), name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
