"""The decoder's orjson fast path and its strict path give every message the same outcome: the same
model, or the same dead-letter reason and detail; the fast path is taken for compact producers' JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts import DecodeError, Event, EventType, Item, decode, encode
from streams.contracts._codec import _fast_parse
from streams.contracts._models import MAX_TS
from streams.harness.hostile import BASE_TS, hostile_corpus

Outcome = tuple[str, Any]


def outcome(raw: bytes | None, model: type[Event] | type[Item], fast: bool) -> Outcome:
    try:
        return "ok", decode(raw, model, fast=fast)
    except DecodeError as err:
        return err.reason, err.detail


def compact(raw: bytes | None) -> bytes | None:
    """``raw`` as a compact producer would write it, where Python's json reads it (else ``raw``)."""
    try:
        return json.dumps(json.loads(raw or b""), separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        return raw


def assert_agree(raw: bytes | None, model: type[Event] | type[Item]) -> None:
    assert outcome(raw, model, fast=True) == outcome(raw, model, fast=False), raw[:300] if raw else raw


def test_fast_and_strict_agree_on_the_hostile_corpus() -> None:
    corpus = hostile_corpus(now=BASE_TS)
    for h in corpus:
        model = Event if h.role == "events" else Item
        assert_agree(h.value, model)
        assert_agree(compact(h.value), model)  # the same content in the fast path's own spelling
    # the comparison means something: a good part of the compact corpus went the fast way
    taken = sum(1 for h in corpus if (c := compact(h.value)) and _fast_parse(c) is not None)
    assert taken > len(corpus) // 2


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',  # repeated key: orjson keeps the last, the strict parser refuses
        b'{"ts":' + b"9" * 30 + b"}",  # an integer orjson would round to a float
        b'{"a":"\\u00e9"}',  # an escape orjson would write as UTF-8
        b'{"a": 1}',  # not compact
        b'{"a":"\\ud800"}',  # lone surrogate
        b'{"a":NaN}',
        b"[" * 17 + b"]" * 17,  # deeper than the fast path takes
    ],
)
def test_what_the_fast_path_cannot_vouch_for_goes_the_strict_way(raw: bytes) -> None:
    assert _fast_parse(raw) is None


def test_deep_compact_nesting_gets_the_strict_paths_answer() -> None:
    # orjson reads 1,000 levels; Python's json runs out of recursion first and says invalid_json
    event = encode(Event(event_id="e", user_id="u", item_id="i", type="click", ts=1.0))
    raw = event[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert outcome(raw, Event, fast=True) == outcome(raw, Event, fast=False)
    assert outcome(raw, Event, fast=True)[0] == "invalid_json"


events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=40),
    user_id=st.text(min_size=1, max_size=40),
    item_id=st.text(min_size=1, max_size=40),
    type=st.sampled_from(EventType),
    value=st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000).map(float),
    ts=st.floats(0, MAX_TS, allow_nan=False) | st.integers(0, 4_102_444_800).map(float),
)


@settings(derandomize=True, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_valid_events_take_the_fast_path_and_decode_as_the_strict_path_does(event: Event) -> None:
    raw = encode(event)
    assert _fast_parse(raw) is not None
    assert decode(raw, Event) == decode(raw, Event, fast=False) == event


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event_fields = st.sampled_from(["event_id", "user_id", "item_id", "type", "value", "ts", "schema_version", "x"])
field_values = values | st.sampled_from(["u", "click", "rating", 1, 1.5, BASE_TS, 1e400, -0.0, "\ud800"])


@settings(derandomize=True, max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(event_fields, field_values), max_size=9), st.booleans())
def test_fast_and_strict_agree_on_generated_objects(pairs: list[tuple[str, Any]], spaced: bool) -> None:
    # written by hand so keys may repeat, and with Python's spelling of NaN, Infinity and surrogates
    sep = ", " if spaced else ","
    body = sep.join(f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=False)}" for k, v in pairs)
    raw = ("{" + body + "}").encode("utf-8", "surrogatepass")
    assert_agree(raw, Event)
