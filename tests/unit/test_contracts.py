"""Wire contracts: the shipped JSON Schemas match the models, and decoding says why it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts import (
    DecodeError,
    Event,
    Item,
    Recommendation,
    RecommendedItem,
    decode_event,
    encode,
    json_schemas,
)

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
