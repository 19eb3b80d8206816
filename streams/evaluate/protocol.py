"""The prequential replay: every event in event-time order, each positive first tests what the user sees, then teaches.

What a user "sees now" in a system that publishes a list per event is the list published after
their previous event (any event: a view too). So at each positive event the list published after
the same user's previous event is scored against the items of this and the user's next positive
events (:data:`N_TARGETS` in all); then the event goes in and its own list comes out, to be scored
at the user's next positive. A user's first event has no list before it and is not scored (the
user is cold; their second event is scored against a list built from one event).

Systems are driven exactly as the worker drives its recommender: ``process(batch, store)`` on
micro-batches of ``(user key, event)`` with one store of user states, so what is scored is what
the deployed system would have published (see :mod:`streams.evaluate.kafka` for the same replay
through Kafka and a real worker).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Protocol

from streams.contracts import Event, EventType, Recommendation
from streams.evaluate.metrics import ScoredList

if TYPE_CHECKING:
    from streams.recommender import BatchResult, ListTrace

#: A rating at or above this is a positive engagement; every rating is a view.
POSITIVE_RATING = 4.0
#: How many of the user's next positives a list is scored against.
N_TARGETS = 5


class System(Protocol):
    """What the replay drives: :class:`~streams.recommender.Recommender` and the baselines."""

    def process(self, events: Sequence[tuple[bytes, Event]], store: Mapping[bytes, bytes]) -> BatchResult: ...


def is_positive(event: Event) -> bool:
    """Ratings count from :data:`POSITIVE_RATING` up; views never; other engagements always."""
    if event.type == EventType.RATING:
        return event.value >= POSITIVE_RATING
    return event.type != EventType.VIEW


def next_positives(events: Iterable[Event], n: int = N_TARGETS) -> dict[str, list[str]]:
    """For each positive event, the items of it and of the same user's next ``n - 1`` positives.

    >>> evs = [Event(event_id=f"e{i}", user_id="u", item_id=f"i{i}", type="rating", value=v, ts=float(i))
    ...        for i, v in enumerate([5, 2, 4, 4.5])]
    >>> next_positives(evs, n=2)
    {'e0': ['i0', 'i2'], 'e2': ['i2', 'i3'], 'e3': ['i3']}
    """
    by_user: defaultdict[str, list[Event]] = defaultdict(list)
    for e in events:
        if is_positive(e):
            by_user[e.user_id].append(e)
    out: dict[str, list[str]] = {}
    for positives in by_user.values():
        for j, e in enumerate(positives):
            out[e.event_id] = [p.item_id for p in positives[j : j + n]]
    return out


def replay(
    system: System,
    events: Sequence[Event],
    batch_size: int,
    store: MutableMapping[bytes, bytes] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_traces: Callable[[Sequence[Event], Sequence[ListTrace]], None] | None = None,
) -> Iterator[tuple[Event, Recommendation]]:
    """Feed ``events`` in order, ``batch_size`` at a time, as the worker does; yield each event with the
    list published after it. ``on_batch(n)`` reports progress; ``on_traces`` gets each batch's traces."""
    store = {} if store is None else store
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        result = system.process([(e.user_id.encode(), e) for e in batch], store)
        store.update(result.states)
        if on_traces is not None:
            on_traces(batch, result.traces)
        yield from zip(batch, result.lists, strict=True)
        if on_batch is not None:
            on_batch(len(batch))


class Prequential:
    """Turns the stream of ``(event, list published after it)`` into the scored lists, in order.

    It keeps, from the events fed so far (never later ones), what the metrics need at scoring time:
    the last list each user was shown, how often each item was touched (novelty) and each user's
    genre distribution over their positives (calibration).
    """

    def __init__(self, events: Sequence[Event], genres: Mapping[str, Sequence[str]], policy: str) -> None:
        self.targets = next_positives(events)
        self.genres = genres
        self.policy = policy
        self.shown: dict[str, Recommendation] = {}
        self.counts: defaultdict[str, float] = defaultdict(float)
        self.total = 0.0
        self.user_genres: defaultdict[str, dict[str, float]] = defaultdict(dict)
        #: Positive events of users with no list yet (their first event), not scored.
        self.cold = 0

    def feed(self, event: Event, published: Recommendation) -> ScoredList | None:
        """Score what the user sees before ``event`` (if it is positive), then take in the event and
        ``published``, the list made after it."""
        if published.event_id != event.event_id:
            raise ValueError(f"list for {published.event_id!r} fed with event {event.event_id!r}")
        user, positive, scored = event.user_id, is_positive(event), None
        if positive and user not in self.shown:
            self.cold += 1
        elif positive:
            shown = self.shown[user]
            items = [i.item_id for i in shown.items]
            scored = ScoredList(
                user_id=user, event_id=event.event_id, ts=event.ts, policy=self.policy, items=items,
                reasons=[i.reason for i in shown.items], targets=self.targets[event.event_id],
                counts=[self.counts[i] for i in items], total=self.total, user_genres=dict(self.user_genres[user]),
            )
        self.counts[event.item_id] += 1
        self.total += 1
        genres = dict.fromkeys(self.genres.get(event.item_id, ()))
        if positive and genres:
            mix = self.user_genres[user]
            for g in genres:  # Steck's p(g|i): an item's genres share its unit weight
                mix[g] = mix.get(g, 0.0) + 1.0 / len(genres)
        self.shown[user] = published
        return scored
