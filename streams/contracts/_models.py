from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1
# Bounds keep one hostile message from costing unbounded memory or CPU downstream.
MAX_ID = 256
MAX_TEXT = 8192
MAX_LABELS = 64  #: categories or tags per item
MAX_LABEL = 256  #: characters per category or tag
MAX_ITEMS = 500  #: items per recommendation list (the settings' largest K)
MAX_VALUE = 1e6  #: |value| of an event: far beyond any rating or weight, far below float overflow
#: Timestamps are seconds since the epoch, up to 2100-01-01: a later one is a unit error (ms, ns) or
#: hostile, and a single one would move event time for everyone (feedback windows expire by it).
MAX_TS = 4_102_444_800.0


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    LIKE = "like"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION


Id = Field(min_length=1, max_length=MAX_ID)
Label = Annotated[str, Field(max_length=MAX_LABEL)]

Timestamp = Field(ge=0, le=MAX_TS, allow_inf_nan=False, description="Seconds since the Unix epoch")


class Item(_Message):
    """A catalog item (topic ``items``, compacted, keyed by ``item_id``)."""

    item_id: str = Id
    title: str = Field(max_length=MAX_TEXT)
    text: str = Field(default="", max_length=MAX_TEXT, description="Free text embedded with the title")
    categories: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    tags: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    created_at: float = Timestamp
    available: bool = Field(
        default=True,
        description="false retires the item: it leaves every list (users' histories keep it) until sent again "
        "with true. A tombstone (null value) on the item's key retires it too",
    )

    def embedding_text(self) -> str:
        """What the encoder sees: title, free text and categories in one string."""
        parts = [self.title, self.text, ", ".join(self.categories)]
        return ". ".join(p for p in parts if p)


class Event(_Message):
    """A user's interaction with an item (topic ``events``, keyed by ``user_id``)."""

    event_id: str = Id
    user_id: str = Id
    item_id: str = Id
    type: EventType
    value: float = Field(
        default=1.0, ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False, description="Rating (type=rating), else a weight"
    )
    ts: float = Timestamp


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    item_id: str
    score: float = Field(
        description="The ranker's score: higher is more relevant, comparable within one list only (not a "
        "probability; it may be negative); exploration slots carry 0"
    )
    reason: str = Field(description="Why the item is here, e.g. 'similar', 'trending', 'explore'")


class Recommendation(_Message):
    """One top-K list (topic ``recommendations``, keyed by ``user_id``)."""

    user_id: str
    event_id: str = Field(description="The event that triggered this list (for de-duplication)")
    generated_at: float = Field(description="Seconds since the Unix epoch")
    policy: str
    arm: str = Field(default="default", description="Experiment arm (the A/B bucket) that produced the list")
    items: list[RecommendedItem] = Field(max_length=MAX_ITEMS)


class DeadLetter(_Message):
    """A message the worker could not use, with why, and its original bytes."""

    topic: str
    partition: int
    offset: int
    reason: str = Field(description="Machine-readable code, e.g. 'invalid_json', 'schema', 'unknown_item'")
    detail: str
    original_b64: str = Field(description="The original value, base64")
    key_b64: str | None = None
    failed_at: float


class EmbeddedItem(_Message):
    """An item with its embedding (internal compacted topic ``<items>-vectors``).

    Written once per item version by the items agent, read in full by every worker, so the
    encoder runs once per item however many workers there are.
    """

    item: Item
    vector_b64: str = Field(description="Little-endian float32 embedding, base64")


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each topic's messages, by topic role."""
    return {
        "items": Item.model_json_schema(),
        "events": Event.model_json_schema(),
        "recommendations": Recommendation.model_json_schema(),
        "dead_letter": DeadLetter.model_json_schema(),
    }
