"""``deliver`` re-sends what the broker did not acknowledge, and never drops a message; ``publish`` writes
the states only once the rest of a batch's output is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
import pytest
from aiokafka import TopicPartition

from streams.app.batch import Outbox
from streams.app.guarantee import at_least_once
from streams.app.guarantee.at_least_once import AtLeastOnce, deliver
from streams.app.guarantee.states import TableStates
from streams.security import KafkaConnection
from streams.testing import FakeApp


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


class HeldTopic:
    """Records each send in ``log`` and acknowledges it only when :meth:`ack` is called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.unacked: list[asyncio.Future[None]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.log.append(f"send {self.name}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unacked.append(fut)
        return fut

    def ack(self) -> None:
        self.log.append(f"ack {self.name}")
        for fut in self.unacked:
            fut.set_result(None)
        self.unacked.clear()


async def settle() -> None:
    """Let every task that can run, run (not with asyncio.sleep: the fixture makes it return at once)."""
    loop = asyncio.get_running_loop()
    for _ in range(10):
        tick: asyncio.Future[None] = loop.create_future()
        loop.call_soon(tick.set_result, None)
        await tick


async def test_the_states_go_out_only_after_the_lists_and_lessons_are_acknowledged_together() -> None:
    log: list[str] = []
    topics = {name: HeldTopic(name, log) for name in ("lists", "lessons", "changelog")}
    guarantee = AtLeastOnce(FakeApp(), KafkaConnection(bootstrap="unused:9092"), cast(Any, topics), TableStates({}))
    guarantee.changelog = "changelog"
    box, tp = Outbox(), TopicPartition("events", 0)
    box.add(tp, "lists", b"u1", b"L1")
    box.add(tp, "lessons", b"0", b"X")
    box.add(tp, "changelog", b"u1", b"S1")
    publishing = asyncio.ensure_future(guarantee.publish(box, {tp: 1}, 0))
    await settle()
    # Both sent before either is acknowledged: one wait, not one per topic; no state yet.
    assert log == ["send lists", "send lessons"]
    topics["lists"].ack()
    await settle()
    assert "send changelog" not in log, "a state written before its event's lessons are acknowledged"
    topics["lessons"].ack()
    await settle()
    assert log[-1] == "send changelog"
    topics["changelog"].ack()
    assert await publishing == {tp}
