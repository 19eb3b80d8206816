"""Wire contracts: the shipped JSON Schemas match the models, and decoding says why it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts import (
    MAX_CLOCK_SKEW_S,
    DecodeError,
    Event,
    EventType,
    Item,
    Recommendation,
    RecommendedItem,
    check_event_time,
    decode_event,
    decode_item,
    encode,
    json_schemas,
)
from streams.contracts._models import MAX_ID, MAX_LABEL, MAX_LABELS, MAX_TS, MAX_VALUE

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "streams" / "contracts" / "schemas"


@pytest.mark.parametrize("role", sorted(json_schemas()))
def test_shipped_schema_is_the_models_schema(role: str) -> None:
    shipped = json.loads((SCHEMA_DIR / f"{role}.schema.json").read_text())
    assert shipped == json_schemas()[role], "run `python -m streams.contracts` to regenerate"


def _valid_event() -> dict[str, object]:
    return {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "value": 1, "ts": 1700000000.5}


def test_valid_messages_validate_against_the_shipped_schemas() -> None:
    event = Event.model_validate(_valid_event())
    item = Item(item_id="i1", title="Alien", categories=["Sci-Fi"], created_at=1.0)
    rec = Recommendation(
        user_id="u1", event_id="e1", generated_at=2.0, policy="mmr",
        items=[RecommendedItem(item_id="i1", score=0.5, reason="similar")],
    )
    for role, msg in (("events", event), ("items", item), ("recommendations", rec)):
        schema = json.loads((SCHEMA_DIR / f"{role}.schema.json").read_text())
        wire = json.loads(encode(msg))
        assert wire["schema_version"] == 1
        jsonschema.validate(wire, schema)


def test_round_trip() -> None:
    event = decode_event(json.dumps(_valid_event()).encode())
    assert decode_event(encode(event)) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "schema"),
        (json.dumps({**_valid_event(), "type": "teleport"}).encode(), "schema"),
        (json.dumps({**_valid_event(), "ts": -5}).encode(), "schema"),
        (json.dumps({**_valid_event(), "user_id": ""}).encode(), "schema"),
        (json.dumps({**_valid_event(), "value": "NaN"}).encode(), "schema"),
        (json.dumps({k: v for k, v in _valid_event().items() if k != "item_id"}).encode(), "schema"),
        (json.dumps({**_valid_event(), "schema_version": 99}).encode(), "schema"),
        (b"[" * 100_000, "too_large"),
        (b"[" * 50_000, "invalid_json"),
    ],
)
def test_bad_events_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(raw)
    assert err.value.reason == reason


@given(st.binary(max_size=512))
def test_decoder_never_raises_anything_but_decode_error(raw: bytes) -> None:
    try:
        decode_event(raw)
    except DecodeError as err:
        assert err.reason in {"empty", "too_large", "invalid_utf8", "invalid_json", "schema"}


REASONS = {"empty", "too_large", "invalid_utf8", "invalid_json", "schema"}

#: any JSON value, nested
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # the 2-core CI is shared
@given(st.dictionaries(st.sampled_from([*sorted(_valid_event()), "schema_version", "x"]), json_values))
def test_json_objects_of_any_shape_decode_or_raise_decode_error(fields: dict[str, object]) -> None:
    raw = json.dumps({**_valid_event(), **fields}).encode()
    try:
        event = decode_event(raw)
    except DecodeError as err:
        assert err.reason in REASONS
    else:
        assert decode_event(encode(event)) == event  # whatever is accepted can be written and read back


ids = st.text(min_size=1, max_size=MAX_ID)


@given(
    st.builds(
        Event,
        event_id=ids, user_id=ids, item_id=ids, type=st.sampled_from(list(EventType)),
        value=st.floats(-MAX_VALUE, MAX_VALUE), ts=st.floats(0, MAX_TS),
    )
)
def test_valid_events_round_trip(event: Event) -> None:
    assert decode_event(encode(event)) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (json.dumps(_valid_event()).replace("1700000000.5", "NaN").encode(), "invalid_json"),
        (json.dumps(_valid_event()).replace("1700000000.5", "Infinity").encode(), "invalid_json"),
        (json.dumps(_valid_event()).replace("1700000000.5", "9" * 5000).encode(), "invalid_json"),
        (json.dumps(_valid_event())[:-1].encode() + b', "user_id": "u2"}', "invalid_json"),
        (json.dumps({**_valid_event(), "user_id": "u\ud800"}).encode(), "invalid_json"),
        (json.dumps({**_valid_event(), "ts": MAX_TS + 1}).encode(), "schema"),
        (json.dumps({**_valid_event(), "value": MAX_VALUE * 2}).encode(), "schema"),
    ],
)
def test_json_that_readers_disagree_on_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(raw)
    assert err.value.reason == reason


def test_item_lists_and_labels_are_bounded() -> None:
    item = {"item_id": "i", "title": "t", "created_at": 1.0}
    decode_item(json.dumps({**item, "categories": ["c"] * MAX_LABELS}).encode())
    for bad in ({"categories": ["c"] * (MAX_LABELS + 1)}, {"tags": ["t"] * (MAX_LABELS + 1)},
                {"categories": ["c" * (MAX_LABEL + 1)]}):
        with pytest.raises(DecodeError, match="schema"):
            decode_item(json.dumps({**item, **bad}).encode())


def test_events_from_the_future_are_refused() -> None:
    event = Event.model_validate(_valid_event())
    assert check_event_time(event, now=event.ts - MAX_CLOCK_SKEW_S) is event
    with pytest.raises(DecodeError) as err:
        check_event_time(event, now=event.ts - MAX_CLOCK_SKEW_S - 1)
    assert err.value.reason == "future_ts"
