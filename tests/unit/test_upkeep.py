"""The worker's upkeep timers outlive a failed run: a timer's exception would crash the worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from streams.app.factory import upkeep


async def test_a_failed_run_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []

    def timer(interval: float) -> Callable[[Any], Any]:
        def register(fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            timers.append((interval, fun))
            return fun

        return register

    runs: list[int] = []

    async def look() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionError("broker away")

    upkeep(SimpleNamespace(timer=timer), 5.0, look)  # type: ignore[arg-type]
    [(interval, guarded)] = timers
    with caplog.at_level(logging.ERROR):
        await guarded()
        await guarded()
    assert interval == 5.0 and runs == [0, 1]
    assert "look failed; again in 5.0 s" in caplog.text and "broker away" in caplog.text
