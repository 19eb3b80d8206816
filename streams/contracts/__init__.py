"""Wire contracts of the streamrec topics: JSON messages with a ``schema_version``.

The pydantic models here are the source of truth; ``schemas/*.json`` are their JSON Schema,
shipped for producers and consumers in other languages (a test keeps them in step).
"""

from streams.contracts._codec import (
    MAX_CLOCK_SKEW_S,
    MAX_MESSAGE_BYTES,
    DecodeError,
    check_event_time,
    decode,
    decode_event,
    decode_item,
    encode,
)
from streams.contracts._models import (
    SCHEMA_VERSION,
    DeadLetter,
    EmbeddedItem,
    Event,
    EventType,
    Item,
    Recommendation,
    RecommendedItem,
    json_schemas,
)

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DecodeError",
    "EmbeddedItem",
    "Event",
    "EventType",
    "Item",
    "Recommendation",
    "RecommendedItem",
    "check_event_time",
    "decode",
    "decode_event",
    "decode_item",
    "encode",
    "json_schemas",
]
