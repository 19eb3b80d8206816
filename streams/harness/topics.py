"""The topics one streamrec app reads and writes, created up front (as an operator would)."""

from __future__ import annotations

from streams.app.worker import vectors_topic_name
from streams.local.kafka import acreate_topics
from streams.security import KafkaConnection
from streams.settings import Settings


async def create_app_topics(settings: Settings, *extra: str) -> None:
    """Every topic of ``settings``' app, and ``extra`` ones, with its partition count; the catalog topics compacted."""
    compacted = {settings.topic_items, vectors_topic_name(settings)}
    names = [*compacted, settings.topic_events, settings.topic_recommendations, settings.topic_dead_letter, *extra]
    kafka = KafkaConnection.from_settings(settings)
    await acreate_topics(kafka, dict.fromkeys(names, settings.partitions), compacted=compacted)
