"""At-least-once: a batch's output sent and acknowledged, the user states last, then its input offsets
committed on their own (a crash in between replays the batch; the stamps make the replay a no-op).

User states live in a Faust table (in memory, its changelog written by the batches themselves and
read back by Faust's recovery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

import faust
from aiokafka import TopicPartition

from streams.app import faust_internals
from streams.app.batch import Message, Outbox
from streams.app.guarantee.base import Guarantee
from streams.app.guarantee.states import TableStates
from streams.contracts.topics import user_state_changelog
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


class AtLeastOnce(Guarantee):
    """The lists, lessons and dead letters together, then the states, each waited on until the broker
    acknowledged all of it; offsets committed after."""

    isolation_level = "read_uncommitted"

    def __init__(
        self, app: faust.App, kafka: KafkaConnection, topics: Mapping[str, faust.TopicT], states: TableStates
    ) -> None:
        super().__init__(app, kafka)
        self.topics = topics
        self.states = states
        self.committed: dict[TopicPartition, int] = {}  # what this worker committed, per partition it owns

    @classmethod
    def declare(
        cls, app: faust.App, settings: Settings, kafka: KafkaConnection, outputs: Iterable[faust.TopicT]
    ) -> AtLeastOnce:
        """The user-state table, declared on ``app``, and the guarantee that delivers to ``outputs`` and it."""
        # key_type/value_type as well as the schema: recovery decodes the changelog by the types alone
        # (JSON otherwise), so without them a restarted worker could not read its state back.
        table = app.Table(
            "user-state",
            default=None,
            key_type=bytes,
            value_type=bytes,
            schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
            partitions=settings.partitions,
            use_partitioner=True,
        )
        changelog = table.changelog_topic
        topics = {t.get_topic_name(): t for t in (*outputs, changelog)}
        guarantee = cls(app, kafka, topics, TableStates(faust_internals.table_data(table)))
        guarantee.changelog = changelog.get_topic_name()
        assert guarantee.changelog == user_state_changelog(settings)
        return guarantee

    async def revoked(self, tps: set[TopicPartition]) -> None:
        # A partition that comes back starts from its committed offset, maybe moved on elsewhere.
        for tp in tps:
            self.committed.pop(tp, None)

    async def publish(
        self, outbox: Outbox, offsets: Mapping[TopicPartition, int], generation: int
    ) -> Set[TopicPartition]:
        # Everything but the states at once (one wait for acknowledgements instead of one per topic),
        # then the states: a state is written only once its lists are acknowledged, since a replayed
        # event whose state holds it is skipped (see streams.app.stamps).
        by_topic = dict(outbox.by_topic())
        states = by_topic.pop(self.changelog, None)
        await asyncio.gather(*(deliver(self.topics[t], m) for t, m in by_topic.items()))
        if states:
            await deliver(self.topics[self.changelog], states)
        return set(offsets)

    async def commit(self, handled: Mapping[TopicPartition, int]) -> None:
        """Commit the offsets handled since the last commit, of the partitions the consumer holds."""
        assigned = self.assignment()
        due = {tp: off for tp, off in handled.items() if tp in assigned and off > self.committed.get(tp, -1)}
        if not due:
            return
        try:
            done = await faust_internals.commit_offsets(self.app, due)
        except Exception as exc:  # the events are read again and skipped as replays: nothing lost
            log.warning("offset commit failed (%s); the events after the last commit will be replayed", exc)
            return
        if done:
            self.committed.update(due)


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
