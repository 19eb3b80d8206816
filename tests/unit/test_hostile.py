"""The hostile corpus is deterministic, large, and each message gets exactly the reason it claims from the
worker's own parsing (the integration test then checks the real worker on real Kafka does the same)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from streams.app.batch import Record
from streams.app.events import parse_event
from streams.contracts import DecodeError, decode_item
from streams.harness.hostile import hostile_corpus, valid_catalog, valid_events

NOW = time.time()  # future_ts is judged against the real clock


def reason_of(role: str, key: bytes | None, value: bytes | None, known: Any) -> str:
    try:
        if role == "events":
            parse_event(Record("events", 0, 0, key, value, 0.0), known)
        else:
            decode_item(value)
    except DecodeError as err:
        return err.reason
    return "accepted"


def test_every_hostile_message_gets_the_reason_it_claims() -> None:
    known = {it.item_id for it in valid_catalog()}
    corpus = hostile_corpus(now=NOW)
    assert len(corpus) >= 1000 and corpus == hostile_corpus(now=NOW)
    got = [reason_of(h.role, h.key, h.value, known) for h in corpus]
    wrong = Counter((h.kind, h.reason, reason) for h, reason in zip(corpus, got, strict=True) if reason != h.reason)
    assert not wrong
    assert len({h.kind for h in corpus}) >= 30, "the corpus covers many kinds of bad input"


def test_the_valid_stream_is_accepted() -> None:
    known = {it.item_id for it in valid_catalog()}
    for event in valid_events():
        assert reason_of("events", event.user_id.encode(), event.model_dump_json().encode(), known) == "accepted"
