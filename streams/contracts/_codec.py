from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from streams.contracts._models import Event, Item

M = TypeVar("M", bound=BaseModel)

#: Larger values are refused before parsing.
MAX_MESSAGE_BYTES = 64 * 1024


class DecodeError(ValueError):
    """A message that cannot be used; ``reason`` is a stable, machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(raw: bytes | None, model: type[M]) -> M:
    """Parse and validate one message of any contract; :class:`DecodeError` says why not."""
    if raw is None:
        raise DecodeError("empty", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", str(exc)) from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DecodeError("invalid_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise DecodeError("schema", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise DecodeError("schema", f"{where}: {first['msg']}") from None


def decode_event(raw: bytes | None) -> Event:
    """Parse and validate one ``events`` message.

    >>> decode_event(b'{"event_id":"e1","user_id":"u","item_id":"i","type":"click","ts":1}').type
    <EventType.CLICK: 'click'>
    >>> try:
    ...     decode_event(b'{"event_id":"e1"')
    ... except DecodeError as e:
    ...     print(e.reason)
    invalid_json
    """
    return decode(raw, Event)


def decode_item(raw: bytes | None) -> Item:
    """Parse and validate one ``items`` message."""
    return decode(raw, Item)


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, the wire format of every topic."""
    return message.model_dump_json().encode("utf-8")
