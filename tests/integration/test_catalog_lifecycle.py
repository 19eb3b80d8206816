"""The life of an item on real Kafka and Triton: retired by a tombstone or ``available: false`` (in no list
made after the worker saw it, across partitions), back when sent again; a malformed tombstone is refused;
an event right behind its item's first version counts (no ``unknown_item``)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from streams.contracts import DeadLetter, Event, Item, Recommendation, decode
from streams.harness import (
    RecommendationCollector,
    WorkerProcess,
    create_app_topics,
    produce,
    read_records,
    run_names,
    send_raw,
)
from streams.harness.hostile import BASE_TS, valid_catalog
from streams.local.kafka import KafkaBroker
from streams.local.triton import TritonServer
from streams.settings import Settings
from streams.testing import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOMBSTONED, UNAVAILABLE = "space-1", "cooking-2"


@pytest.fixture
def settings(kafka_broker: KafkaBroker, triton_server: TritonServer, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_broker.bootstrap, **run_names("lifecycle"), partitions=3, session_timeout_s=6.0,
        encoder="triton", triton_url=triton_server.url, k=8, policy="dpp_explore", explore_share=0.5,
        web_port=free_ports(1)[0], data_dir=tmp_path / "worker", batch_timeout_s=0.005,
    )


def clicks(phase: str, n: int, items: list[str], seed: int) -> list[Event]:
    """``n`` events of users new to this phase (spread over the partitions), each on a random item."""
    rng = random.Random(seed)
    return [
        Event(event_id=f"{phase}-{i}", user_id=f"{phase}-user-{i % 25}", item_id=rng.choice(items), type="click",
              ts=1_700_000_100.0 + i)
        for i in range(n)
    ]


async def lists_of(settings: Settings, collector: RecommendationCollector, events: list[Event]) -> set[str]:
    """Produce ``events`` and wait for their lists; the items those lists hold."""
    before = len(collector.received)
    await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events))
    await collector.wait_for(before + len(events), timeout_s=120)
    mine = {e.event_id for e in events}
    lists: list[Recommendation] = [rec for _, rec in collector.received[before:] if rec.event_id in mine]
    assert len(lists) == len(events)
    return {item.item_id for rec in lists for item in rec.items}


async def test_retired_items_leave_every_list_and_come_back(settings: Settings, tmp_path: Path) -> None:
    await create_app_topics(settings)
    items = valid_catalog()
    ids = [it.item_id for it in items]
    by_id = {it.item_id: it for it in items}
    collector = RecommendationCollector(settings.kafka_bootstrap, settings.topic_recommendations)
    await collector.start()
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in items))
        await asyncio.to_thread(
            worker.wait_until, lambda st: st["catalog_ready"] and st["items"] == len(items), 180, "catalog loaded"
        )
        assert {TOMBSTONED, UNAVAILABLE} <= await lists_of(settings, collector, clicks("before", 150, ids, 1))

        unavailable = Item(**{**by_id[UNAVAILABLE].model_dump(), "available": False})
        await send_raw(settings.kafka_bootstrap, settings.topic_items, [
            (TOMBSTONED.encode(), None), (UNAVAILABLE.encode(), unavailable.model_dump_json().encode()),
            (b"", None), (b"\xff\xfe", None),  # malformed tombstones: an empty key, a key that is no item id
        ])
        await asyncio.to_thread(worker.wait_until, lambda st: st["items_retired"] == 2, 120, "items retired")
        after = await lists_of(settings, collector, clicks("after", 300, ids, 2))
        assert TOMBSTONED not in after and UNAVAILABLE not in after
        assert len(after) >= len(items) - 4, "the other items are still listed"

        again = [(i, by_id[i]) for i in (TOMBSTONED, UNAVAILABLE)]
        await produce(settings.kafka_bootstrap, settings.topic_items, again)
        await asyncio.to_thread(worker.wait_until, lambda st: st["items_retired"] == 0, 120, "items back")
        assert {TOMBSTONED, UNAVAILABLE} <= await lists_of(settings, collector, clicks("again", 150, ids, 3))
        # an item and its first event back to back: the event counts, though the item has no vector yet
        fresh = Item(item_id="late-arrival", title="A late arrival", categories=["space"], created_at=BASE_TS)
        await produce(settings.kafka_bootstrap, settings.topic_items, [(fresh.item_id, fresh)])
        first = Event(event_id="late-0", user_id="late-user", item_id=fresh.item_id, type="click", ts=BASE_TS)
        assert fresh.item_id not in await lists_of(settings, collector, [first])
        dead = [decode(r.value, DeadLetter) for r in await read_records(settings.kafka_bootstrap,
                                                                          settings.topic_dead_letter)]
    await collector.stop()
    assert [(d.topic, d.reason, d.key_b64) for d in dead] == [
        (settings.topic_items, "schema", ""), (settings.topic_items, "schema", "//4=")
    ]
    assert all("tombstone" in d.detail for d in dead)
