"""The learner role on real Kafka: serving workers teach it, it learns from the whole stream, and its
snapshots survive a SIGKILL of the learner or of a serving worker.

Two serving workers share 4 partitions; one learner reads every partition's lessons; the learner, or
one serving worker, is killed mid-stream and restarted. The promises: every event has its list, the
learner folds every lessons record exactly once (also across its own crash, resuming from its snapshot
and the offsets in it), the restarted process's models are byte-equal to the snapshot it loaded, and
every serving worker ends up serving the learner's last snapshot, which covers every event.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.contracts import Event, Item
from streams.contracts.topics import lessons_topic_name, models_topic_name
from streams.demo.movielens import most_rated
from streams.harness import WorkerProcess, produce, read_records
from streams.interest import engagement_weight
from streams.learning.lessons import from_record
from streams.learning.snapshot import Assembler, decode
from streams.local.kafka import KafkaBroker
from streams.settings import Settings
from streams.testing import free_ports
from tests.integration.test_reliability import kill, launch, open_run, wait_lists, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 200


@pytest.fixture(scope="module")
def stream() -> tuple[list[Item], list[Event]]:
    """The 200 most-rated movies and the first 6,000 of their ratings, oldest first."""
    data = most_rated(N_ITEMS)
    return data.items, data.events[:6_000]


def role(settings: Settings, tmp_path: Path, name: str, kind: str) -> Settings:
    return settings.model_copy(update={"role": kind, "web_port": free_ports(1)[0], "data_dir": tmp_path / name})


async def learner_status(learner: WorkerProcess, what: str, predicate: Any, timeout_s: float = 180) -> dict[str, Any]:
    await wait_status(learner, lambda st: predicate(st["models"]), timeout_s, what)
    status = learner.status()
    assert status is not None
    models: dict[str, Any] = status["models"]
    return models


async def lessons_on_topic(settings: Settings) -> int:
    records = await read_records(settings.kafka_bootstrap, lessons_topic_name(settings), idle_s=1.0,
                                 isolation_level=settings.isolation_level)
    assert all(from_record(r.value) for r in records)  # every one readable
    return len(records)


async def newest_snapshot(settings: Settings) -> Any:
    assembler = Assembler()
    for r in await read_records(settings.kafka_bootstrap, models_topic_name(settings), idle_s=1.0):
        assembler.add(r.key, r.value)
    latest = assembler.latest()
    assert latest is not None, "no whole snapshot on the models topic"
    return decode(latest[1])


@pytest.mark.parametrize(
    ("victim", "guarantee"),
    [("learner", "at_least_once"), pytest.param("learner", "exactly_once", id="learner-exactly-once"),
     ("server", "at_least_once")],
)
async def test_two_serving_workers_and_a_learner_one_killed_mid_stream(
    kafka_broker: KafkaBroker, tmp_path: Path, stream: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess], victim: str, guarantee: str,
) -> None:
    items, events = stream
    base, collector = await open_run(kafka_broker, tmp_path, partitions=4, batch_size=100,
                                     processing_guarantee=guarantee, snapshot_interval_s=1.0)
    serving = [role(base, tmp_path, f"serve{i}", "serve") for i in range(2)]
    learner_settings = role(base, tmp_path, "learner", "learn")
    log = tmp_path / "workers.log"
    servers = [launch(s, log, workers) for s in serving]
    learner = launch(learner_settings, tmp_path / "learner.log", workers)
    await produce(base.kafka_bootstrap, base.topic_items, ((it.item_id, it) for it in items))
    for server in servers:
        await wait_status(server, lambda st: st["catalog_ready"] and st["items"] == len(items), 300, "catalog loaded")
    half = len(events) // 2
    await produce(base.kafka_bootstrap, base.topic_events, ((e.user_id, e) for e in events[:half]))
    first = await learner_status(learner, "a snapshot published", lambda m: m["version"] >= 2)
    if victim == "learner":
        kill(learner)  # between two snapshots, or in the middle of one
        await produce(base.kafka_bootstrap, base.topic_events, ((e.user_id, e) for e in events[half:]))
        learner = launch(learner_settings, tmp_path / "learner.log", workers)
        resumed = await learner_status(learner, "resumed", lambda m: m["restored"] is not None)
    else:
        await wait_status(servers[0], lambda st: st["models"]["snapshot"], 120, "serving a snapshot")
        kill(servers[0])  # in the middle of its batches
        await produce(base.kafka_bootstrap, base.topic_events, ((e.user_id, e) for e in events[half:]))
        servers[0] = launch(serving[0], log, workers)
        await wait_status(servers[0], lambda st: st["models"]["restored"], 120, "loaded a snapshot")
        resumed = servers[0].status()["models"]  # type: ignore[index]
    assert resumed["restored"]["version"] >= first["version"]
    assert resumed["restored"]["byte_equal"], "the models came back byte-equal to the snapshot they resumed from"
    try:
        await wait_lists(collector, len(events), 600)
        handled = len(events)
        final = await learner_status(learner, "every event's lessons folded",
                                     lambda m: sum(m["events"].values()) >= handled and m["lag"] == 0)
        version = final["version"]
        for server in servers:  # each worker swaps the learner's newest snapshot in, covering every event
            await wait_status(server, lambda st, v=version: (st["models"]["snapshot"] or 0) >= v
                              and st["models"]["events_behind"] == 0, 120, "serving the newest snapshot")
    finally:
        await collector.stop()
    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in events}, "every event has a list"
    if guarantee == "exactly_once":  # a reader of committed data sees each list once
        assert max(lists.values()) == 1, "a list published twice under exactly-once"
    # Folded exactly once: the newest snapshot counts every lessons record on the topic, no more.
    await asyncio.sleep(2 * base.snapshot_interval_s)
    snap = await newest_snapshot(base)
    assert snap.records == await lessons_on_topic(base)
    assert sum(snap.events.values()) == len(events)
    users = {e.user_id for e in events if engagement_weight(e) > 0}
    assert set(snap.arrays["mf.users"].tolist()) == users, "the learner learned every worker's users"
