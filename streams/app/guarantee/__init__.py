"""The processing guarantees: one :class:`Guarantee` interface, an at-least-once and an exactly-once one.

See ``docs/guarantees.md`` for what each promises and how it is tested.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust

from streams.app.guarantee.at_least_once import AtLeastOnce
from streams.app.guarantee.base import Guarantee, PartitionReader
from streams.app.guarantee.exactly_once import ExactlyOnce
from streams.app.guarantee.states import UserStates
from streams.security import KafkaConnection
from streams.settings import Settings

__all__ = ["AtLeastOnce", "ExactlyOnce", "Guarantee", "PartitionReader", "UserStates", "declare_guarantee"]


def declare_guarantee(
    app: faust.App, settings: Settings, kafka: KafkaConnection, outputs: Iterable[faust.TopicT]
) -> Guarantee:
    """The guarantee ``settings`` ask for, with its user-state store, declared on ``app``."""
    if settings.processing_guarantee == "exactly_once":
        return ExactlyOnce.declare(app, settings, kafka)
    return AtLeastOnce.declare(app, settings, kafka, outputs)
