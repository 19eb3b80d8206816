"""The demo's pacer against a simulated worker: a queue served at a fixed capacity."""

from __future__ import annotations

import numpy as np
import pytest

from streams.demo.pace import Pacer


def simulate(
    capacity: float, seconds: float = 150.0, dt: float = 0.05, base_ms: float = 30.0,
    stall: tuple[float, float] | None = None, warmup_s: float = 0.0,
) -> tuple[Pacer, list[tuple[float, float, float]]]:
    """Offer ``pacer.rate`` to a worker that answers ``capacity`` events/s in order (none while stalled or
    warming up), updating the pacer as the demo does; per step (time, rate, latency in ms of what was
    answered)."""
    pacer = Pacer()
    t = queue = sent = answered = 0.0
    steps: list[tuple[float, float, float]] = []
    while t < seconds:
        t += dt
        serving = 0.0 if (stall and stall[0] <= t < stall[1]) or t < warmup_s else capacity
        sent += pacer.rate * dt
        queue += pacer.rate * dt
        served = min(queue, serving * dt)
        queue -= served
        answered += served
        latency = base_ms + 1000 * queue / capacity  # what the last event answered waited
        steps.append((t, pacer.rate, latency if served else float("nan")))
        recent = [lat for when, _, lat in steps if when > t - pacer.interval_s and lat == lat]
        pacer.update(t, int(sent), int(answered), max(recent) if recent else None)
    return pacer, steps


@pytest.mark.parametrize("capacity", [150.0, 400.0, 1200.0, 3000.0])
def test_settles_below_capacity_within_the_goal(capacity: float) -> None:
    pacer, steps = simulate(capacity)
    late = [(rate, lat) for t, rate, lat in steps if t > 60]
    mean_rate = float(np.mean([rate for rate, _ in late]))
    assert 0.75 * capacity <= mean_rate <= capacity  # uses the worker, with room left
    assert np.nanpercentile([lat for _, lat in late], 99) <= 1.2 * pacer.goal_ms
    assert pacer.overloads  # it found the capacity rather than stopping short of it


def test_a_stall_backs_off_to_the_floor_and_recovers_quickly() -> None:
    pacer, steps = simulate(600.0, stall=(60.0, 65.0))
    during = [rate for t, rate, _ in steps if 62.0 < t < 65.0]
    assert max(during) == pacer.floor  # nothing answered: nothing more offered
    after = [rate for t, rate, _ in steps if 90.0 < t < 120.0]
    assert np.mean(after) >= 0.75 * 600  # back near the capacity it had found, not creeping up from the floor


def test_a_fixed_slow_worker_is_not_offered_more_than_it_answers() -> None:
    _, steps = simulate(40.0, seconds=120.0)
    assert np.mean([rate for t, rate, _ in steps if t > 60]) <= 40.0


def test_the_first_list_s_wait_is_warm_up_not_a_stall() -> None:
    pacer, steps = simulate(600.0, seconds=20.0, warmup_s=2.5)
    assert {rate for t, rate, _ in steps if t < 2.5} == {pacer.start}  # held while no list came
    assert min(rate for _, rate, _ in steps) > pacer.floor
