"""End to end: items and events into real Kafka, a real worker with the real Triton encoder, lists out."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from encoders import TritonEncoder
from streams.contracts import DeadLetter, Event, Item, decode
from streams.explore import explore_slots
from streams.harness import RecommendationCollector, WorkerProcess, create_app_topics, produce, read_records, run_names
from streams.local.kafka import KafkaBroker
from streams.local.triton import TritonServer
from streams.policies import assign, parse_split
from streams.settings import Settings
from streams.testing import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THEMES = {
    "space": [
        "Voyage to the Outer Planets",
        "Mission to Mars",
        "Astronauts Stranded on the Moon",
        "The Last Space Shuttle",
        "Galaxy Explorers",
        "Rocket Launch at Dawn",
        "Orbiting Jupiter",
        "Starship Crew Lost in Deep Space",
        "Colonising Saturn's Moons",
        "Interstellar Travel Diaries",
    ],
    "cooking": [
        "Baking Sourdough Bread at Home",
        "Italian Pasta from Scratch",
        "Grandma's Soup Recipes",
        "The Perfect Chocolate Cake",
        "Street Food of Bangkok",
        "Grilling Steak Like a Chef",
        "Vegetarian Curry Kitchen",
        "French Pastry Masterclass",
        "Sushi Rolling Basics",
        "Tacos and Salsa Night",
    ],
    "sport": [
        "World Cup Football Final",
        "Marathon Runners' Stories",
        "Tennis Grand Slam Highlights",
        "Basketball Playoffs",
        "Olympic Swimming Records",
        "Cycling the Tour de France",
        "Boxing Title Fight",
        "Ski Jumping Championship",
        "Baseball World Series",
        "Rugby Scrum Tactics",
    ],
    "garden": [
        "Growing Tomatoes in Pots",
        "Pruning Roses",
        "A Year in the Vegetable Garden",
        "Composting for Beginners",
        "Orchids Indoors",
        "Planting Fruit Trees",
        "Lawn Care Secrets",
        "Herb Garden on the Balcony",
        "Designing a Japanese Garden",
        "Beekeeping and Wildflowers",
    ],
}
K = 5


def catalog() -> list[Item]:
    return [
        Item(item_id=f"{theme}-{i}", title=title, categories=[theme], created_at=1_700_000_000.0)
        for theme, titles in THEMES.items()
        for i, title in enumerate(titles)
    ]


def click(n: int, user: str, item: str, kind: str = "click") -> Event:
    return Event(event_id=f"ev-{n}", user_id=user, item_id=item, type=kind, ts=1_700_000_100.0 + n)


def event_stream() -> list[Event]:
    plan = [("astro", f"space-{i}") for i in range(4)] + [("chef", f"cooking-{i}") for i in range(3)]
    plan += [("mixed", "sport-0"), ("mixed", "garden-3"), ("astro", "space-4"), ("newbie", "garden-1")]
    events = [click(n, user, item) for n, (user, item) in enumerate(plan)]
    events.append(click(len(events), "astro", "space-5", "view"))
    return events


@pytest.fixture
def settings(kafka_broker: KafkaBroker, triton_server: TritonServer, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_broker.bootstrap,
        **run_names("pipeline"),
        partitions=2,
        session_timeout_s=6.0,
        encoder="triton",
        triton_url=triton_server.url,
        k=K,
        policy="mmr",
        ab_split="mmr=1,dpp_explore=1",
        ab_salt="pipeline-test",
        explore_share=0.2,
        mmr_lambda=0.7,
        web_port=free_ports(1)[0],
        data_dir=tmp_path / "worker",
        batch_timeout_s=0.005,
        unknown_item_timeout_s=3.0,  # an event for an unknown item waits that long for it
    )


async def test_events_in_diversified_lists_out(settings: Settings, tmp_path: Path) -> None:
    await create_app_topics(settings)
    items, events = catalog(), event_stream()
    bad = [
        ("astro", b"{not json"),
        ("astro", json.dumps({**click(900, "astro", "no-such-item").model_dump(mode="json")}).encode()),
        ("chef", json.dumps({"event_id": "x", "user_id": "chef"}).encode()),
    ]
    collector = RecommendationCollector(settings.kafka_bootstrap, settings.topic_recommendations)
    await collector.start()
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in items))
        await asyncio.to_thread(
            worker.wait_until,
            lambda st: st["catalog_ready"] and st["items"] == len(items),
            180,
            "catalog loaded",
        )
        # Events go one by one, so each list reflects exactly the events before it.
        stream: list[tuple[str, Event | bytes]] = [(e.user_id, e) for e in events]
        stream[3:3] = bad
        for key, message in stream:
            await produce(settings.kafka_bootstrap, settings.topic_events, [(key, message)])
        await collector.wait_for(len(events), timeout_s=120)
        await asyncio.sleep(2.0)  # anything extra would show up now
        dead = [
            decode(r.value, DeadLetter)
            for r in await read_records(settings.kafka_bootstrap, settings.topic_dead_letter, at_least=3)
        ]
    await collector.stop()

    recs = [rec for _, rec in collector.received]
    assert sorted(r.event_id for r in recs) == sorted(e.event_id for e in events), (
        "exactly one list per event"
    )

    engaged: defaultdict[str, set[str]] = defaultdict(set)
    by_event = {r.event_id: r for r in recs}
    for event in events:
        engaged[event.user_id].add(event.item_id)
        rec = by_event[event.event_id]
        ids = [i.item_id for i in rec.items]
        assert rec.user_id == event.user_id
        assert rec.policy == rec.arm == assign(event.user_id, parse_split(settings.ab_split), settings.ab_salt)
        explored = sum(i.reason == "explore" for i in rec.items)
        assert explored == (explore_slots(0.2, K) if rec.policy == "dpp_explore" else 0)
        assert len(ids) == K == len(set(ids))
        assert not set(ids) & engaged[event.user_id], f"{event.event_id} recommends engaged items"

    # The space fan's latest list is about space: closer to space titles than a random list.
    async with TritonEncoder(url=settings.triton_url) as enc:
        vecs = await enc.encode([it.title for it in items])
    vec = {it.item_id: v for it, v in zip(items, vecs, strict=True)}
    space = np.stack([vec[i.item_id] for i in items if i.item_id.startswith("space-")])
    last_astro = [r for r in recs if r.user_id == "astro"][-1]
    closeness = float(np.mean([space @ vec[i.item_id] for i in last_astro.items]))
    rng = np.random.default_rng(0)
    random_lists = [rng.choice(len(items), K, replace=False) for _ in range(200)]
    random_closeness = float(np.mean([np.mean([space @ vecs[j] for j in lst]) for lst in random_lists]))
    assert closeness > random_closeness + 0.1, (closeness, random_closeness)
    exploited = [i for i in last_astro.items if i.reason != "explore"]
    assert sum(i.item_id.startswith("space-") for i in exploited) >= len(exploited) - 1
    assert {r.policy for r in recs} == {"mmr", "dpp_explore"}, "the salt splits these users over both arms"

    # Bad input: each refused message is in the dead-letter topic with its reason and original bytes.
    assert sorted(d.reason for d in dead) == ["invalid_json", "schema", "unknown_item"]
    originals = {base64.b64decode(d.original_b64) for d in dead}
    assert originals == {raw for _, raw in bad}
    assert all(d.topic == settings.topic_events for d in dead)
