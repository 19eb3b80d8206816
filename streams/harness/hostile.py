"""A deterministic corpus of hostile messages, each with the dead-letter reason the worker must give it.

Mixed into a valid stream (:func:`valid_catalog`, :func:`valid_events`) it checks that the worker never
stops, dead-letters every bad message with the right machine-readable reason and its original bytes,
and still answers every valid event. Every hostile message has a unique key (``h<n>``, or a unique
``event_id`` where the key is missing), so a test can find its dead letter.

>>> corpus = hostile_corpus(seed=1, now=1_700_000_000.0)
>>> len(corpus) >= 1000, corpus == hostile_corpus(seed=1, now=1_700_000_000.0)
(True, True)
>>> sorted({h.reason for h in corpus})  # doctest: +NORMALIZE_WHITESPACE
['empty', 'future_ts', 'invalid_json', 'invalid_utf8', 'key_mismatch', 'schema', 'too_large', 'unknown_item']
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from streams.contracts import MAX_CLOCK_SKEW_S, MAX_MESSAGE_BYTES, Event, EventType, Item
from streams.contracts._models import MAX_ID, MAX_LABEL, MAX_LABELS, MAX_TS, MAX_VALUE

Role = Literal["events", "items"]
THEMES = ("space", "cooking", "sport", "garden")
ITEMS_PER_THEME = 5
BASE_TS = 1_700_000_000.0


@dataclass(frozen=True)
class Hostile:
    """One bad message: where it goes, its raw key and value, the reason it must be refused with."""

    role: Role
    key: bytes | None
    value: bytes | None
    reason: str
    kind: str  #: what is wrong with it, for failure messages


def valid_catalog() -> list[Item]:
    return [
        Item(item_id=f"{theme}-{i}", title=f"{theme} story {i}", categories=[theme], created_at=BASE_TS)
        for theme in THEMES
        for i in range(ITEMS_PER_THEME)
    ]


def valid_events(n: int = 60, seed: int = 0) -> list[Event]:
    """``n`` events of a few users over the :func:`valid_catalog`, in time order."""
    rng = random.Random(seed)
    items = [it.item_id for it in valid_catalog()]
    return [
        Event(
            event_id=f"ok-{i}", user_id=f"user-{i % 7}", item_id=rng.choice(items),
            type=rng.choice(list(EventType)), value=rng.choice([1.0, 4.5]), ts=BASE_TS + i,
        )
        for i in range(n)
    ]


def _event(n: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": f"bad-{n}", "user_id": f"h{n}", "item_id": "space-0", "type": "click", "value": 1.0,
        "ts": BASE_TS + n,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not _DROP}


_DROP = object()


def _js(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# Each maker turns (n, rng, now) into (key, value, reason, kind) of an ``events`` message; the key is
# h<n> (the event's user) unless the message is about the key.
Made = tuple[bytes | None, bytes | None, str, str]


def _empty(n: int, rng: random.Random, now: float) -> Made:
    return f"h{n}".encode(), rng.choice([None, b""]), "empty", "no value (tombstone or zero bytes)"


def _too_large(n: int, rng: random.Random, now: float) -> Made:
    pad = "x" * (MAX_MESSAGE_BYTES + rng.randrange(1, 4096))
    return f"h{n}".encode(), _js(_event(n, padding=pad)), "too_large", "over 64 KiB"


def _invalid_utf8(n: int, rng: random.Random, now: float) -> Made:
    bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"])
    raw = _js(_event(n)).replace(f'"h{n}"'.encode(), b'"h' + bad + b'"')
    return f"h{n}".encode(), raw, "invalid_utf8", f"invalid UTF-8 {bad!r}"


def _invalid_json(n: int, rng: random.Random, now: float) -> Made:
    good = json.dumps(_event(n))
    variants = {
        "truncated": good[: rng.randrange(1, len(good) - 1)],
        "trailing garbage": good + "}",
        "NaN literal": good.replace('"value": 1.0', '"value": NaN'),
        "Infinity literal": good.replace(f'"ts": {BASE_TS + n}', '"ts": Infinity'),
        "4301-digit integer": good.replace('"value": 1.0', '"value": ' + "9" * 4301),
        "repeated key": good[:-1] + f', "user_id": "other-{n}"}}',
        "lone surrogate": good.replace(f'"bad-{n}"', f'"bad-{n}\\ud800"'),
        "deep nesting": good[:-1] + ', "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
        "single quotes": good.replace('"', "'"),
        "byte order mark": "\ufeff" + good,
    }
    kind = rng.choice(sorted(variants))
    return f"h{n}".encode(), variants[kind].encode(), "invalid_json", kind


WRONG_TYPES: list[dict[str, Any]] = [{"ts": "yesterday"}, {"user_id": 7}, {"value": [1]}, {"type": 3}]


def _schema(n: int, rng: random.Random, now: float) -> Made:
    variants: dict[str, Any] = {
        "not an object": rng.choice([[1, 2], "event", 42, None, True]),
        "missing field": _event(n, **{rng.choice(["event_id", "user_id", "item_id", "type"]): _DROP}),
        "null field": _event(n, **{rng.choice(["event_id", "user_id", "item_id", "type", "ts", "value"]): None}),
        "wrong type": _event(n, **rng.choice(WRONG_TYPES)),
        "unknown type": _event(n, type="teleport"),
        "empty id": _event(n, event_id=""),
        "oversized id": _event(n, item_id="i" * (MAX_ID + 1)),
        "negative ts": _event(n, ts=-rng.uniform(1, 1e9)),
        "ts after 2100": _event(n, ts=MAX_TS + rng.uniform(1, 1e12)),
        "huge value": _event(n, value=MAX_VALUE * rng.uniform(1.01, 1e6)),
        "unknown schema version": _event(n, schema_version=rng.choice([0, 2, "1"])),
        "nested where a scalar goes": _event(n, ts=json.loads("[" * 200 + "]" * 200)),
    }
    kind = rng.choice(sorted(variants))
    return f"h{n}".encode(), _js(variants[kind]), "schema", kind


def _key_mismatch(n: int, rng: random.Random, now: float) -> Made:
    key = rng.choice([None, f"someone-else-{n}".encode(), b""])
    return key, _js(_event(n)), "key_mismatch", f"key {key!r}"


def _future_ts(n: int, rng: random.Random, now: float) -> Made:
    ts = now + MAX_CLOCK_SKEW_S * rng.uniform(3, 1000)  # > 15 min ahead, still before 2100
    return f"h{n}".encode(), _js(_event(n, ts=ts)), "future_ts", "ts ahead of the clock"


def _unknown_item(n: int, rng: random.Random, now: float) -> Made:
    item = rng.choice([f"no-such-item-{n}", "SPACE-0", "space-0 ", "space-99"])
    return f"h{n}".encode(), _js(_event(n, item_id=item)), "unknown_item", f"item {item!r}"


#: maker, weight: the rarer ones are the bulky ones
EVENT_MAKERS: list[tuple[Callable[[int, random.Random, float], Made], int]] = [
    (_empty, 1), (_too_large, 1), (_invalid_utf8, 2), (_invalid_json, 4), (_schema, 6),
    (_key_mismatch, 2), (_future_ts, 1), (_unknown_item, 2),
]


def _bad_item(n: int, rng: random.Random) -> Hostile:
    item: dict[str, Any] = {"item_id": f"hi{n}", "title": "t", "categories": ["c"], "created_at": BASE_TS}
    changes: list[tuple[str, dict[str, Any]]] = [
        ("too many categories", {"categories": [f"c{i}" for i in range(MAX_LABELS + 1 + rng.randrange(500))]}),
        ("too many tags", {"tags": ["t"] * (MAX_LABELS + 1)}),
        ("category too long", {"categories": ["c" * (MAX_LABEL + 1)]}),
        ("missing title", {"title": _DROP}),
        ("categories not a list", {"categories": "space"}),
        ("created_at after 2100", {"created_at": MAX_TS * 2}),
    ]
    kind, change = rng.choice(changes)
    fields = {k: v for k, v in {**item, **change}.items() if v is not _DROP}
    return Hostile("items", f"hi{n}".encode(), _js(fields), "schema", kind)


def hostile_corpus(n_events: int = 1100, n_items: int = 100, seed: int = 7, now: float = 0.0) -> list[Hostile]:
    """``n_events`` bad events and ``n_items`` bad items; ``now``: the worker's clock (for ``future_ts``)."""
    rng = random.Random(seed)
    makers = [m for m, weight in EVENT_MAKERS for _ in range(weight)]
    corpus = []
    for n in range(n_events):
        # every class at least once, then at random
        maker = EVENT_MAKERS[n][0] if n < len(EVENT_MAKERS) else rng.choice(makers)
        key, value, reason, kind = maker(n, rng, now or BASE_TS)
        corpus.append(Hostile("events", key, value, reason, kind))
    corpus += [_bad_item(n, rng) for n in range(n_items)]
    return corpus
