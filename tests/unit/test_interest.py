"""How much each event says about interest."""

from __future__ import annotations

import pytest

from streams.contracts import Event
from streams.interest import engagement_weight


def event(kind: str, value: float = 1.0, item: str = "i") -> Event:
    return Event(event_id="e", user_id="u", item_id=item, type=kind, value=value, ts=10.0)


@pytest.mark.parametrize(
    ("kind", "value", "weight"),
    [("view", 1, 0.25), ("click", 1, 1.0), ("purchase", 1, 3.0), ("rating", 5, 1.0), ("rating", 4, 0.5),
     ("rating", 3, 0.0), ("rating", 0.5, 0.0), ("click", -2, 0.0)],
)
def test_engagement_weight(kind: str, value: float, weight: float) -> None:
    assert engagement_weight(event(kind, value)) == pytest.approx(weight)
