"""``deliver`` re-sends what the broker did not acknowledge, and never drops a message."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
import pytest

from streams.app.guarantee import at_least_once
from streams.app.guarantee.at_least_once import deliver


class FlakyTopic:
    """Fails the first ``fail_sends`` sends outright and the first ``fail_acks`` acknowledgements."""

    def __init__(self, fail_sends: int = 0, fail_acks: int = 0) -> None:
        self.fail_sends, self.fail_acks = fail_sends, fail_acks
        self.acked: list[tuple[bytes | None, bytes]] = []

    def get_topic_name(self) -> str:
        return "flaky"

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        if self.fail_sends:
            self.fail_sends -= 1
            raise RuntimeError("producer closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_acks:
            self.fail_acks -= 1
            fut.set_exception(RuntimeError("not leader"))
        else:
            self.acked.append((key, value))
            fut.set_result(None)
        return fut


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(at_least_once.asyncio, "sleep", instant)


MESSAGES = [(f"u{i}".encode(), f"list {i}".encode()) for i in range(10)]


async def test_failed_acknowledgements_are_resent() -> None:
    topic = FlakyTopic(fail_acks=3)
    await deliver(cast(faust.TopicT, topic), MESSAGES)
    assert sorted(topic.acked) == sorted(MESSAGES)


async def test_a_send_that_raises_resends_the_rest() -> None:
    topic = FlakyTopic(fail_sends=2)
    await deliver(cast(faust.TopicT, topic), MESSAGES)
    assert sorted(topic.acked) == sorted(MESSAGES)


async def test_nothing_to_send_returns_at_once() -> None:
    topic: Any = FlakyTopic()
    await deliver(topic, [])
    assert topic.acked == []
