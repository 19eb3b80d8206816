""":func:`streams.app.faust_internals.take_batches` over a Faust stream of an in-memory channel (no broker):
when a batch goes, and how much it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import faust
import pytest

from streams.app.faust_internals import take_batches

Batch = tuple[list[int], float]  # the values and when the batch was yielded (monotonic seconds)


@pytest.fixture
async def channel() -> AsyncIterator[faust.ChannelT[int]]:
    app = faust.App("take", broker="kafka://127.0.0.1:1", store="memory://")
    app.flow_control.resume()  # the app is not started: let its queues take values
    yield app.channel()


async def consume(
    channel: faust.ChannelT[int], size: int, within_s: float, handle: Callable[[list[int]], Awaitable[None]]
) -> tuple[asyncio.Task[None], list[Batch]]:
    stream = channel.stream()
    got: list[Batch] = []

    async def run() -> None:
        async for batch in take_batches(stream, size, within_s):
            got.append(([int(e.value) for e in batch], time.monotonic()))
            await handle(got[-1][0])

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.05)  # the stream is being drained
    return task, got


async def until(got: list[Batch], n: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} batches of {n} after {timeout_s} s: {got}"
        await asyncio.sleep(0.01)


async def nothing(_: list[int]) -> None:
    return None


async def test_an_event_after_a_quiet_spell_goes_at_once_and_the_next_waits_for_the_period(
    channel: faust.ChannelT[int],
) -> None:
    task, got = await consume(channel, 100, within_s=1.5, handle=nothing)
    try:
        sent = time.monotonic()
        await channel.send(value=1)
        await until(got, 1)
        # take_events would hold it for the whole 1.5 s, waiting for more
        assert got[0][0] == [1] and got[0][1] - sent < 1.0
        await channel.send(value=2)
        await channel.send(value=3)
        await until(got, 2)
        assert got[1][0] == [2, 3] and got[1][1] - got[0][1] >= 1.5 - 0.05  # at most one batch per period
    finally:
        task.cancel()


async def test_a_batch_fills_while_the_last_is_handled_and_never_holds_more_than_its_size(
    channel: faust.ChannelT[int],
) -> None:
    busy = asyncio.Event()

    async def slow(values: list[int]) -> None:
        if values == [1]:
            busy.set()
            await asyncio.sleep(0.5)

    task, got = await consume(channel, 2, within_s=0.01, handle=slow)
    try:
        await channel.send(value=1)
        await busy.wait()
        for value in range(2, 7):  # while [1] is handled
            await channel.send(value=value)
        await until(got, 4)
        assert [values for values, _ in got] == [[1], [2, 3], [4, 5], [6]]
        # [2, 3] was read while [1] was handled: it goes as soon as the handler is done
        assert got[1][1] - got[0][1] < 0.5 + 0.3
    finally:
        task.cancel()
