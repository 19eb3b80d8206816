"""The demo's offered load, paced to what the worker keeps up with on the machine it runs on.

A fixed rate fits one machine: 600 events/s that one worker carried with room to spare on a quick day
here queued for a minute and a half on a slow one (p50 48 s). :class:`Pacer` finds the rate instead,
as TCP finds a window: it starts low and grows quickly, backs off whenever the worker falls behind,
grows quickly again up to a little below the rate it fell behind at, and slowly from there.
"Behind" is read from what the demo sees anyway: the events not answered yet (by Little's law, a
queue worth more than the latency goal at the current rate) and the slowest lists of the last
interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pacer:
    """The rate to offer, adjusted every :attr:`interval_s` from what was sent and answered.

    >>> p = Pacer(start=100.0)
    >>> p.update(now=1.0, sent=100, answered=0, p99_ms=None)  # no list yet: the worker is warming up
    100.0
    >>> p.update(now=2.0, sent=100, answered=100, p99_ms=40.0)  # keeping up: grow quickly
    125.0
    >>> p.update(now=3.0, sent=225, answered=210, p99_ms=900.0)  # behind: back off below what was answered
    88.0
    >>> p.update(now=4.0, sent=313, answered=311, p99_ms=60.0)  # quickly up to a little below where it fell behind
    100.0
    >>> p.update(now=5.0, sent=413, answered=413, p99_ms=60.0)  # and slowly from there
    102.0
    >>> p.update(now=6.0, sent=515, answered=415, p99_ms=None)  # a stall: wait for it to pass
    10.0
    >>> p.update(now=7.0, sent=525, answered=525, p99_ms=450.0)  # its queue drains: hold
    10.0
    >>> p.update(now=8.0, sent=535, answered=535, p99_ms=50.0), p.threshold  # then quickly back
    (12.5, 100.0)
    """

    #: Events/s to start at: low enough for any machine that runs the demo at all.
    start: float = 100.0
    #: The p99 latency (event produced -> list consumed) to stay under, in ms.
    goal_ms: float = 500.0
    floor: float = 10.0
    ceiling: float = 5000.0
    interval_s: float = 1.0
    #: Growth per interval while the worker keeps up: below :attr:`threshold` (up to it), and above it.
    quick: float = 1.25
    slow: float = 1.02
    #: The share of the goal under which the p99 leaves room to grow (latency rises with the batches).
    comfort: float = 0.8
    #: What is kept of the answered rate when the worker falls behind (the rest drains its queue).
    back_off: float = 0.8
    rate: float = field(init=False)
    #: The rates the worker fell behind at, in order.
    overloads: list[float] = field(init=False, default_factory=list)
    #: Where quick growth ends: :attr:`back_off` times the rate the worker last fell behind at.
    threshold: float = field(init=False, default=float("inf"))
    history: list[tuple[float, float, int, float | None]] = field(init=False, default_factory=list)
    _last: tuple[float, int] | None = field(init=False, default=None)  # (time, answered) at the last update

    def __post_init__(self) -> None:
        self.rate = self.start

    def due(self, now: float) -> bool:
        """Whether an interval has passed since the last change, so that :meth:`update` would act."""
        return self._last is None or now - self._last[0] >= self.interval_s

    def update(self, now: float, sent: int, answered: int, p99_ms: float | None) -> float:
        """The rate after an interval that ended at ``now`` (seconds) with ``sent`` events sent and
        ``answered`` of them listed so far, and ``p99_ms`` the p99 latency of its lists (None: none came)."""
        if not self.due(now):
            return self.rate
        then, answered_then = self._last if self._last is not None else (now - self.interval_s, 0)
        self._last = (now, answered)
        backlog = sent - answered
        if not answered:  # the first list carries the worker's warm-up: nothing to judge it by yet
            self.history.append((now, self.rate, backlog, p99_ms))
            return self.rate
        behind = backlog > self.rate * self.goal_ms / 1000 or (p99_ms is not None and p99_ms > self.goal_ms)
        answered_rate = (answered - answered_then) / (now - then)
        if behind and answered_rate < self.rate:  # (not while a queue drains faster than events come)
            self.overloads.append(self.rate)
            if answered_rate >= self.rate / 2:  # more than it can carry; not a stall (a rebalance, a pause)
                self.threshold = self.back_off * self.rate
            self.rate = self.back_off * answered_rate
        elif backlog <= self.rate * self.goal_ms / 2000 and (p99_ms is None or p99_ms <= self.comfort * self.goal_ms):
            below = self.rate < self.threshold
            self.rate = min(self.threshold, self.rate * self.quick) if below else self.rate * self.slow
        self.rate = min(self.ceiling, max(self.floor, self.rate))
        self.history.append((now, self.rate, backlog, p99_ms))
        return self.rate
