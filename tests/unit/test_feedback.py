"""Attribution: a shown-then-engaged slot is one positive, an ignored one expires into one negative,
clicks on items never shown earn nothing, windows are event-time and inclusive, memory is bounded."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts import Event, RecommendedItem
from streams.feedback import FeedbackJoiner, Reward

W = 60.0


def shown(*ids: str, reason: str = "similar") -> list[RecommendedItem]:
    return [RecommendedItem(item_id=i, score=1.0, reason=reason) for i in ids]


def event(item: str, ts: float, user: str = "u", type: str = "click", value: float = 1.0) -> Event:
    return Event(event_id=f"{user}-{item}-{ts}", user_id=user, item_id=item, type=type, value=value, ts=ts)


def joiner(**kw: float) -> FeedbackJoiner:
    j = FeedbackJoiner(window_s=W, **kw)  # type: ignore[arg-type]
    j.record_impressions("u", "r1", shown("a", "b") + shown("x", reason="explore"), "arm1", "mmr", ts=100.0)
    return j


def test_shown_then_clicked_is_one_positive() -> None:
    j = joiner()
    (r,) = j.on_engagement(event("x", 110.0))
    assert r == Reward("x", "arm1", "mmr", "explore", 2, 1.0, "u", "r1", 100.0)
    assert j.on_engagement(event("x", 111.0)) == []  # a second click is not a second positive
    assert [(r.item_id, r.reward) for r in j.on_engagement(event("a", 112.0, type="purchase"))] == [("a", 1.0)]
    assert [(r.item_id, r.reward) for r in j.expire(1e9)] == [("b", 0.0)]


def test_click_on_unshown_item_or_other_user_gives_nothing() -> None:
    j = joiner()
    assert j.on_engagement(event("zzz", 110.0)) == []
    assert j.on_engagement(event("a", 110.0, user="other")) == []
    assert j.on_engagement(event("a", 110.0, type="view")) == []  # too weak to count as engagement
    assert j.on_engagement(event("a", 110.0, type="rating", value=2)) == []
    assert len(j.expire(1e9)) == 3


def test_unclicked_impressions_expire_into_negatives_exactly_once() -> None:
    j = joiner()
    j.on_engagement(event("b", 120.0))
    negatives = j.expire(now=200.0)
    assert sorted((r.item_id, r.position, r.reward) for r in negatives) == [("a", 0, 0.0), ("x", 2, 0.0)]
    assert j.expire(now=300.0) == [] and j.pending == 0
    assert j.on_engagement(event("a", 200.0)) == []  # expired, so no late positive either


def test_window_boundaries_are_inclusive_and_event_time() -> None:
    j = joiner()
    assert j.on_engagement(event("a", 99.9)) == []  # before it was shown
    assert j.on_engagement(event("b", 100.0 + W + 0.01)) == []  # just outside
    assert len(j.on_engagement(event("a", 100.0 + W))) == 1  # exactly at the edge
    assert j.expire(now=100.0 + W) == []  # not yet older than the window
    assert {r.item_id for r in j.expire(now=100.0 + W + 0.01)} == {"b", "x"}


def test_item_in_two_lists_credits_the_latest_once() -> None:
    j = joiner()
    j.record_impressions("u", "r2", shown("c", "a"), "arm2", "dpp", ts=130.0)
    (r,) = j.on_engagement(event("a", 140.0))
    assert (r.rec_event_id, r.arm, r.position) == ("r2", "arm2", 1)
    assert sorted(r.item_id for r in j.expire(1e9)) == ["b", "c", "x"]  # no negative for r1's "a"


def test_out_of_order_lists_and_expiry_order() -> None:
    j = FeedbackJoiner(window_s=W)
    j.record_impressions("u", "late", shown("b"), "a", "p", ts=200.0)
    j.record_impressions("u", "early", shown("a"), "a", "p", ts=100.0)
    j.record_impressions("v", "mid", shown("c"), "a", "p", ts=150.0)
    assert [r.item_id for r in j.expire(now=170.0)] == ["a"]
    assert [r.item_id for r in j.expire(now=1e9)] == ["c", "b"]


def test_memory_is_bounded() -> None:
    j = FeedbackJoiner(window_s=W, max_per_user=5, max_users=3)
    for n in range(10):
        j.record_impressions(f"u{n}", "r", shown(*"abcd"), "arm", "p", ts=float(n))
    j.record_impressions("u9", "r2", shown(*"efg"), "arm", "p", ts=20.0)
    assert j.pending == 4 + 4 + 5 and j.dropped == 7 * 4 + 2
    assert j.on_engagement(event("a", 5.0, user="u0")) == []  # evicted
    for n in range(5000):  # no expire() calls: the expiry index must not grow without bound
        j.record_impressions(f"w{n}", "r", shown("a"), "arm", "p", ts=float(n))
    assert len(j._heap) <= 2 * 3 + 1024
    assert [r.user_id for r in j.expire(1e9)] == ["w4997", "w4998", "w4999"]


def test_round_trip_keeps_pending_and_behaviour() -> None:
    j = joiner(max_users=10)
    j.record_impressions("v", "r9", shown("q"), "arm", "p", ts=50.0)
    j.on_engagement(event("b", 101.0))
    back = FeedbackJoiner.from_bytes(j.to_bytes())
    assert (back.window_s, back.max_users, back.dropped, back.pending) == (W, 10, 0, 3)
    assert back.on_engagement(event("x", 120.0)) == j.on_engagement(event("x", 120.0))
    assert back.expire(1e9) == j.expire(1e9)


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["show", "click", "expire"]), st.sampled_from("uvw"), st.sampled_from("abcde"),
                  st.floats(0, 500)),
        max_size=60,
    )
)
def test_every_impression_resolves_at_most_once(ops: list[tuple[str, str, str, float]]) -> None:
    j = FeedbackJoiner(window_s=W, max_per_user=4, max_users=2)
    recorded, rewards = 0, []
    for n, (op, user, item, ts) in enumerate(ops):
        if op == "show":
            j.record_impressions(user, f"r{n}", shown(item, "z"), "arm", "p", ts)
            recorded += 2
        elif op == "click":
            rewards += j.on_engagement(event(item, ts, user))
        else:
            rewards += j.expire(ts)
    rewards += j.expire(math.inf)
    keys = [(r.rec_event_id, r.position) for r in rewards]
    assert len(keys) == len(set(keys))
    assert len(rewards) + j.dropped + j.superseded == recorded and j.pending == 0
