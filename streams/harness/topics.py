"""The topics one streamrec app reads and writes, created up front (as an operator would)."""

from __future__ import annotations

import uuid

from streams.app.admin import acreate_topics
from streams.contracts import vectors_topic_name
from streams.contracts.topics import lessons_topic_name, models_topic_name
from streams.security import KafkaConnection
from streams.settings import Settings


async def create_app_topics(settings: Settings, *extra: str) -> None:
    """Every topic of ``settings``' app, and ``extra`` ones, with its partition count; the catalog topics compacted."""
    compacted = {settings.topic_items, vectors_topic_name(settings)}
    names = [*compacted, settings.topic_events, settings.topic_recommendations, settings.topic_dead_letter,
             lessons_topic_name(settings), *extra]
    kafka = KafkaConnection.from_settings(settings)
    models = models_topic_name(settings)  # one partition: a snapshot's chunks in order
    partitions = {**dict.fromkeys(names, settings.partitions), models: 1}
    await acreate_topics(kafka, partitions, compacted={*compacted, models})


def run_names(prefix: str, run_id: str | None = None) -> dict[str, str]:
    """Settings fields for one isolated run: an app id (group, changelog) and topics no other run uses.

    >>> names = run_names("demo", "42")
    >>> names["app_id"], names["topic_events"]
    ('streamrec-demo-42', 'demo-42-events')
    """
    run = run_id or uuid.uuid4().hex[:8]
    return {
        "app_id": f"streamrec-{prefix}-{run}",
        "topic_items": f"{prefix}-{run}-items",
        "topic_events": f"{prefix}-{run}-events",
        "topic_recommendations": f"{prefix}-{run}-recommendations",
        "topic_dead_letter": f"{prefix}-{run}-dlq",
    }
