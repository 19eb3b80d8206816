"""Wire contracts of the streamrec topics: JSON messages with a ``schema_version``.

The pydantic models here are the source of truth; ``schemas/*.json`` are their JSON Schema,
shipped for producers and consumers in other languages (a test keeps them in step). Topic names a
worker derives (:mod:`~streams.contracts.topics`) and the item-vector codec (:mod:`~streams.contracts.vectors`)
live here too.
"""

from streams.contracts._codec import (
    MAX_CLOCK_SKEW_S,
    MAX_MESSAGE_BYTES,
    DecodeError,
    Tombstone,
    check_event_time,
    decode,
    decode_event,
    decode_item,
    decode_item_record,
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
from streams.contracts.topics import user_state_changelog, vectors_topic_name
from streams.contracts.vectors import b64_vector, vector_of

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
    "Tombstone",
    "b64_vector",
    "check_event_time",
    "decode",
    "decode_event",
    "decode_item",
    "decode_item_record",
    "encode",
    "json_schemas",
    "user_state_changelog",
    "vector_of",
    "vectors_topic_name",
]
