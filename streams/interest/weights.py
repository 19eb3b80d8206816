"""How much one event says about a user's interest."""

from __future__ import annotations

from streams.contracts import Event, EventType

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
