"""Join engagements to the impressions that preceded them: the rewards for bandits and the
labels (positives and negatives) for a relevance model."""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams._state import dump_state, load_state
from streams.contracts import Event, RecommendedItem
from streams.interest import engagement_weight

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Reward:
    """The outcome of one shown slot: ``reward`` 1.0 (engaged within the window) or 0.0 (expired).

    ``arm`` and ``policy`` are what :meth:`FeedbackJoiner.record_impressions` was given for the
    list; ``reason`` and ``position`` (0-based) are the slot's. A per-item bandit learns from
    ``(item_id, reward)``, a per-list one from ``(arm, reward)``.
    """

    item_id: str
    arm: str
    policy: str
    reason: str
    position: int
    reward: float
    user_id: str
    rec_event_id: str
    shown_at: float


@dataclass(slots=True)
class _Shown:
    ts: float
    item_id: str
    position: int
    reason: str
    rec_event_id: str
    arm: str
    policy: str

    def outcome(self, user_id: str, reward: float) -> Reward:
        return Reward(self.item_id, self.arm, self.policy, self.reason, self.position, reward, user_id,
                      self.rec_event_id, self.ts)


@dataclass(slots=True)
class _User:
    shown: list[_Shown] = field(default_factory=list)  # pending impressions, oldest first
    due: float | None = None  # the ts of this user's live entry in the expiry heap


def _ts(s: _Shown) -> float:
    return s.ts


class FeedbackJoiner:
    """Remembers each user's recent impressions and turns what happens to them into rewards.

    * :meth:`on_engagement`: an engagement (``engagement_weight >= min_weight``: clicks and
      stronger, ratings of 4+, not bare views) with an item shown to the user at most
      ``window_s`` seconds before is a positive for that slot. When the item was in several
      pending lists the latest one gets the credit and the earlier ones are retired unrewarded
      (last touch, counted in :attr:`superseded`), so one click is one positive. An
      engagement with an item never shown (or shown outside the window) yields no reward; it
      is still interest, which the caller feeds to the interest model as usual.
    * :meth:`expire`: impressions more than ``window_s`` old with no engagement are
      negatives. Call it once per micro-batch with the batch's latest event time.

    Each impression is resolved at most once. All times are event times (``ts``), never the
    wall clock, so a replay of the same streams gives the same rewards. Memory is bounded:
    at most ``max_per_user`` pending impressions per user (the oldest go first) and
    ``max_users`` users (the least recently shown to go first); impressions dropped by those
    caps are counted in :attr:`dropped` and give no reward, as their outcome is unknown.

    Events and lists are keyed by user, so each worker joins its own partitions' users.

    >>> items = [RecommendedItem(item_id=i, score=1.0, reason="similar") for i in "ab"]
    >>> j = FeedbackJoiner(window_s=60)
    >>> j.record_impressions("u", "e1", items, arm="mmr", policy="mmr", ts=100.0)
    >>> click = Event(event_id="e2", user_id="u", item_id="b", type="click", ts=130.0)
    >>> [(r.item_id, r.position, r.reward) for r in j.on_engagement(click)], j.on_engagement(click)
    ([('b', 1, 1.0)], [])
    >>> j.expire(now=160.0), [(r.item_id, r.reward) for r in j.expire(now=160.5)]
    ([], [('a', 0.0)])
    """

    def __init__(
        self, window_s: float = 1800.0, max_per_user: int = 200, max_users: int = 100_000, min_weight: float = 0.5
    ) -> None:
        if window_s <= 0 or max_per_user <= 0 or max_users <= 0:
            raise ValueError("window_s, max_per_user and max_users must be positive")
        self.window_s = window_s
        self.max_per_user = max_per_user
        self.max_users = max_users
        self.min_weight = min_weight
        self.dropped = 0
        #: Earlier impressions of an item whose later impression took the credit for a click.
        self.superseded = 0
        self._users: OrderedDict[str, _User] = OrderedDict()  # least recently shown to first
        # (ts of a user's oldest pending impression, user): expire() visits only users with
        # something due. Stale entries (user evicted or rescheduled) are skipped when popped.
        self._heap: list[tuple[float, str]] = []

    @property
    def pending(self) -> int:
        """Impressions waiting for an outcome (``O(users)``)."""
        return sum(len(u.shown) for u in self._users.values())

    def record_impressions(
        self, user_id: str, rec_event_id: str, items: Sequence[RecommendedItem], arm: str, policy: str, ts: float
    ) -> None:
        """Remember that ``items`` were shown to ``user_id`` at event time ``ts``."""
        if not items:
            return
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User()
        self._users.move_to_end(user_id)
        new = [_Shown(ts, it.item_id, pos, it.reason, rec_event_id, arm, policy) for pos, it in enumerate(items)]
        if not user.shown or user.shown[-1].ts <= ts:
            user.shown.extend(new)
        else:  # out of event-time order: keep the list sorted, which expire() relies on
            at = bisect.bisect_right(user.shown, ts, key=_ts)
            user.shown[at:at] = new
        excess = len(user.shown) - self.max_per_user
        if excess > 0:
            del user.shown[:excess]
            self.dropped += excess
        self._schedule(user_id, user)
        while len(self._users) > self.max_users:
            _, old = self._users.popitem(last=False)
            self.dropped += len(old.shown)
        if len(self._heap) > 2 * len(self._users) + 1024:
            self._heap = [(u.due, uid) for uid, u in self._users.items() if u.due is not None]
            heapq.heapify(self._heap)

    def _schedule(self, user_id: str, user: _User) -> None:
        oldest = user.shown[0].ts
        if user.due is None or oldest < user.due:
            user.due = oldest
            heapq.heappush(self._heap, (oldest, user_id))

    def on_engagement(self, event: Event) -> list[Reward]:
        """The positive for the slot that showed ``event.item_id`` to the user, if any."""
        user = self._users.get(event.user_id)
        if user is None or engagement_weight(event) < self.min_weight:
            return []
        hits = [
            i for i, s in enumerate(user.shown)
            if s.item_id == event.item_id and s.ts <= event.ts <= s.ts + self.window_s
        ]
        if not hits:
            return []
        credited = user.shown[hits[-1]]  # sorted by ts: the latest impression
        for i in reversed(hits):
            del user.shown[i]
        self.superseded += len(hits) - 1
        if not user.shown:
            del self._users[event.user_id]  # its heap entry goes stale
        return [credited.outcome(event.user_id, 1.0)]

    def expire(self, now: float) -> list[Reward]:
        """Negatives for the impressions shown before ``now - window_s`` and never engaged with."""
        cutoff = now - self.window_s
        out: list[Reward] = []
        while self._heap and self._heap[0][0] < cutoff:
            due, user_id = heapq.heappop(self._heap)
            user = self._users.get(user_id)
            if user is None or user.due != due:
                continue
            user.due = None
            n = bisect.bisect_left(user.shown, cutoff, key=_ts)
            out.extend(s.outcome(user_id, 0.0) for s in user.shown[:n])
            del user.shown[:n]
            if user.shown:
                self._schedule(user_id, user)
            else:
                del self._users[user_id]
        return out

    def to_bytes(self) -> bytes:
        state = {
            "params": [self.window_s, self.max_per_user, self.max_users, self.min_weight],
            "dropped": self.dropped,
            "superseded": self.superseded,
            "users": [
                [uid, [[s.ts, s.item_id, s.position, s.reason, s.rec_event_id, s.arm, s.policy] for s in u.shown]]
                for uid, u in self._users.items()
            ],
        }
        return dump_state(_VERSION, state)

    @classmethod
    def from_bytes(cls, raw: bytes) -> FeedbackJoiner:
        state = load_state(raw, _VERSION, "feedback")
        joiner = cls(*state["params"])
        joiner.dropped = state["dropped"]
        joiner.superseded = state["superseded"]
        for uid, shown in state["users"]:
            user = joiner._users[uid] = _User([_Shown(*s) for s in shown])
            joiner._schedule(uid, user)
        return joiner
