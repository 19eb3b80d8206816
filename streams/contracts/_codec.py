from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from streams.contracts._models import MAX_ID, Event, Item

M = TypeVar("M", bound=BaseModel)

#: Larger values are refused before parsing.
MAX_MESSAGE_BYTES = 64 * 1024
#: How far an event's ``ts`` may run ahead of the worker's clock (producers' clocks drift a little).
MAX_CLOCK_SKEW_S = 300.0
#: The fast parser takes messages with at most this many ``{`` and ``[`` bytes (the contracts' messages
#: have one or two): far below the depth where the strict parser's recursion limit answers otherwise.
_FAST_BRACKETS = 16


class DecodeError(ValueError):
    """A message that cannot be used; ``reason`` is a stable, machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; RFC 8259 has neither


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse what parsers disagree on or what cannot be written back: a repeated key (which one wins
    depends on the reader) and lone UTF-16 surrogates (``"\\ud800"``: valid JSON, not encodable UTF-8)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("repeated key in an object")
    for key, value in pairs:
        for text in (key, value, *(value if isinstance(value, list) else ())):
            if isinstance(text, str) and not text.isascii():
                text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
    return obj


def _fast_parse(raw: bytes) -> Any | None:
    """``raw`` parsed by orjson if the strict parser would read the very same value from it, else None.

    Only bytes that are exactly orjson's compact writing of what it read are vouched for (what every
    producer of compact JSON sends): a repeated key (orjson keeps the last), an integer it rounds to a
    float, an escape or a space makes them differ. orjson itself refuses NaN, Infinity, lone surrogates
    and invalid UTF-8. Anything refused or not vouched for is left to the strict parser, which says why.
    """
    if raw.count(b"{") + raw.count(b"[") > _FAST_BRACKETS:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if orjson.dumps(obj) == raw else None


def _strict_parse(raw: bytes) -> Any:
    """``raw`` parsed by Python's json with every strictness check; :class:`DecodeError` says why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", str(exc)) from None
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_strict_object)
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, and ints over 4300 digits
        raise DecodeError("invalid_json", str(exc)[:200]) from None


def decode(raw: bytes | None, model: type[M], *, fast: bool = True) -> M:
    """Parse and validate one message of any contract; :class:`DecodeError` says why not.

    ``fast=False`` skips the orjson fast path (the tests check both paths agree).
    """
    if not raw:
        raise DecodeError("empty", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    obj = _fast_parse(raw) if fast else None
    if obj is None:
        obj = _strict_parse(raw)
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


def check_event_time(event: Event, now: float | None = None) -> Event:
    """Refuse an event from the future (``future_ts``): its ``ts`` would move event time for everyone.

    >>> e = Event(event_id="e", user_id="u", item_id="i", type="click", ts=2_000.0)
    >>> check_event_time(e, now=1_000.0)
    Traceback (most recent call last):
    ...
    streams.contracts._codec.DecodeError: future_ts: ts 2000 is 1000 s ahead of the clock (at most 300)
    """
    ahead = event.ts - (time.time() if now is None else now)
    if ahead > MAX_CLOCK_SKEW_S:
        limit = f"at most {MAX_CLOCK_SKEW_S:.0f}"
        raise DecodeError("future_ts", f"ts {event.ts:.0f} is {ahead:.0f} s ahead of the clock ({limit})")
    return event


def decode_item(raw: bytes | None) -> Item:
    """Parse and validate one ``items`` message."""
    return decode(raw, Item)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null value on a compacted topic: the item keyed ``item_id`` is deleted (retired)."""

    item_id: str


def decode_item_record(key: bytes | None, raw: bytes | None) -> Item | Tombstone:
    """An ``items`` record: an :class:`Item`, or a :class:`Tombstone` when its value is null (zero bytes
    are not null: they stay ``empty``). A tombstone's key must be an item id (``schema`` otherwise).

    >>> decode_item_record(b"i1", None)
    Tombstone(item_id='i1')
    >>> try:
    ...     decode_item_record(b"\\xff", None)
    ... except DecodeError as e:
    ...     print(e.reason)
    schema
    """
    if raw is not None:
        return decode_item(raw)
    try:
        item_id = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        item_id = ""
    if not 1 <= len(item_id) <= MAX_ID:
        raise DecodeError("schema", f"a tombstone's key must be an item id of 1-{MAX_ID} UTF-8 characters")
    return Tombstone(item_id)


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, the wire format of every topic."""
    return message.model_dump_json().encode("utf-8")
