"""Topic names a worker derives from its settings (the others are settings of their own)."""

from __future__ import annotations

from streams.settings import Settings


def vectors_topic_name(settings: Settings) -> str:
    """The internal, compacted topic of embedded items (``<items>-vectors``)."""
    return f"{settings.topic_items}-vectors"


def user_state_changelog(settings: Settings) -> str:
    """The changelog of the user states, partitioned like the events (by user key)."""
    return f"{settings.app_id}-user-state-changelog"


def lessons_topic_name(settings: Settings) -> str:
    """What serving workers teach the shared models (partitioned like the events), read by the learner."""
    return f"{settings.app_id}-learning"


def models_topic_name(settings: Settings) -> str:
    """The learner's snapshots of the shared models (compacted, one partition, chunked)."""
    return f"{settings.app_id}-models"
