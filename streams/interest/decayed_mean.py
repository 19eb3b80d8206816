"""The simplest useful interest model: an exponentially decayed sum of engaged item vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.contracts import Event, EventType
from streams.interest.state import UserState

# How much one event says about interest. Views are weak evidence; a rating is centred on
# 3 stars, so a 2-star rating does not pull the user towards the item.
_TYPE_WEIGHT: dict[EventType, float] = {
    EventType.VIEW: 0.25,
    EventType.CLICK: 1.0,
    EventType.LIKE: 1.5,
    EventType.ADD_TO_CART: 2.0,
    EventType.PURCHASE: 3.0,
}


def engagement_weight(event: Event) -> float:
    """Positive evidence of interest carried by ``event`` (0 when there is none).

    >>> from streams.contracts import Event
    >>> ev = lambda t, v=1.0: Event(event_id="e", user_id="u", item_id="i", type=t, value=v, ts=0)
    >>> engagement_weight(ev("click")), engagement_weight(ev("rating", 5)), engagement_weight(ev("rating", 2))
    (1.0, 1.0, 0.0)
    """
    if event.type is EventType.RATING:
        return max(0.0, (event.value - 3.0) / 2.0)
    return _TYPE_WEIGHT[event.type] * max(event.value, 0.0)


class DecayedMeanInterest:
    """``v <- g * v + w * x`` with ``g = 0.5 ** (1 / half_life)`` per event of the user.

    The direction of ``v`` is the user's interest; recent engagements dominate after a
    few half-lives. The history keeps the last ``history_size`` items the user touched
    (any event type), which lists then exclude.

    >>> m = DecayedMeanInterest(dim=2, half_life=1.0, history_size=2)
    >>> s = m.new_state()
    >>> s = m.learn_one(s, "a", np.array([1, 0], np.float32), 1.0, ts=1.0)
    >>> s = m.learn_one(s, "b", np.array([0, 1], np.float32), 1.0, ts=2.0)
    >>> [round(float(x), 3) for x in m.query(s)], s.history
    ([0.447, 0.894], ['a', 'b'])
    """

    def __init__(self, dim: int, half_life: float = 20.0, history_size: int = 50) -> None:
        self.dim = dim
        self.decay = 0.5 ** (1.0 / half_life)
        self.history_size = history_size

    def new_state(self) -> UserState:
        return UserState.empty(self.dim)

    def learn_one(
        self, state: UserState, item_id: str, item_vec: npt.NDArray[np.float32] | None, weight: float, ts: float
    ) -> UserState:
        """Fold one event into ``state`` (in place) and return it."""
        if weight > 0.0 and item_vec is not None:
            vec = self.decay * state.interest.astype(np.float32) + weight * item_vec
            state.interest = vec.astype(np.float16)
            state.weight = self.decay * state.weight + weight
        if item_id in state.history:
            state.history.remove(item_id)
        state.history.append(item_id)
        del state.history[: -self.history_size]
        state.events += 1
        state.last_ts = max(state.last_ts, ts)
        return state

    def query(self, state: UserState) -> npt.NDArray[np.float32]:
        """The unit interest direction (zeros for a cold user)."""
        vec = state.interest.astype(np.float32)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec
