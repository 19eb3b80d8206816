"""User interest state: the decayed-mean update and the compact changelog format."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts import Event
from streams.interest import DecayedMeanInterest, UserState, engagement_weight


def event(kind: str, value: float = 1.0, item: str = "i") -> Event:
    return Event(event_id="e", user_id="u", item_id=item, type=kind, value=value, ts=10.0)


@pytest.mark.parametrize(
    ("kind", "value", "weight"),
    [("view", 1, 0.25), ("click", 1, 1.0), ("purchase", 1, 3.0), ("rating", 5, 1.0), ("rating", 4, 0.5),
     ("rating", 3, 0.0), ("rating", 0.5, 0.0), ("click", -2, 0.0)],
)
def test_engagement_weight(kind: str, value: float, weight: float) -> None:
    assert engagement_weight(event(kind, value)) == pytest.approx(weight)


def test_recent_engagement_dominates_after_half_lives() -> None:
    model = DecayedMeanInterest(dim=2, half_life=2.0, history_size=10)
    state = model.new_state()
    old, new = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    for i in range(3):
        model.learn_one(state, f"old{i}", old, 1.0, ts=i)
    assert model.query(state) @ old > 0.99
    for i in range(8):
        model.learn_one(state, f"new{i}", new, 1.0, ts=10 + i)
    q = model.query(state)
    assert q @ new > 0.95 > q @ old
    assert abs(float(np.linalg.norm(q)) - 1) < 1e-3


def test_zero_weight_events_enter_history_but_not_interest() -> None:
    model = DecayedMeanInterest(dim=2, half_life=5.0, history_size=3)
    state = model.new_state()
    model.learn_one(state, "seen", np.array([1, 0], np.float32), 0.0, ts=1)
    assert state.is_cold and state.history == ["seen"]
    for name in "abcd":
        model.learn_one(state, name, np.array([0, 1], np.float32), 1.0, ts=2)
    assert state.history == ["b", "c", "d"]  # bounded, oldest dropped
    model.learn_one(state, "b", None, 0.0, ts=3)
    assert state.history == ["c", "d", "b"]  # re-engaged item moves to the end, not duplicated
    assert state.events == 6 and state.last_ts == 3


@given(
    vec=st.lists(st.floats(-100, 100, width=16), min_size=384, max_size=384),
    history=st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\x1f" not in s), max_size=50),
    events=st.integers(0, 2**31),
)
def test_state_bytes_round_trip(vec: list[float], history: list[str], events: int) -> None:
    state = UserState(np.array(vec, dtype=np.float16), weight=1.5, events=events, last_ts=9.5, history=history)
    back = UserState.from_bytes(state.to_bytes())
    assert back.history == history and back.events == events and back.weight == 1.5 and back.last_ts == 9.5
    assert np.array_equal(back.interest, state.interest)


def test_state_is_compact() -> None:
    state = UserState.empty(384)
    state.history = [str(100000 + i) for i in range(50)]
    assert len(state.to_bytes()) <= 1200  # 768 B vector + 50 ids + 29 B header
