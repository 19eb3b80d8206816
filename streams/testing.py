"""Helpers for tests, benchmarks and notebooks that drive the recommender core without Kafka."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from streams.contracts import Event, Recommendation
from streams.recommender import BatchResult, Recommender


def run_batch(
    recommender: Recommender, events: Sequence[tuple[bytes, Event]], store: MutableMapping[bytes, bytes]
) -> BatchResult:
    """:meth:`Recommender.process` one batch and write its new user states into ``store``, as the
    worker's table does once the batch is published."""
    result = recommender.process(events, store)
    store.update(result.states)
    return result


def run_lists(
    recommender: Recommender, events: Sequence[tuple[bytes, Event]], store: MutableMapping[bytes, bytes]
) -> list[Recommendation]:
    """:func:`run_batch`'s lists."""
    return run_batch(recommender, events, store).lists
