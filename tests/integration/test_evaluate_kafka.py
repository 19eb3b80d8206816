"""The evaluation's two modes publish the same lists: in-process replay and a real worker on real Kafka.

So the offline numbers describe the deployed system. A slice of MovieLens (every event of a few
users, in time order) goes through both with one partition and micro-batches of one event; the
catalog carries seeded random vectors (what is compared is the code path, not the encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from encoders import EMBEDDING_DIM
from streams.contracts import Recommendation
from streams.evaluate import Prequential, RunMetrics, load_dataset, replay, sample_users
from streams.evaluate.data import build_catalog
from streams.evaluate.kafka import published_through_kafka, run_settings
from streams.evaluate.run import make_system, policy_settings
from streams.local.kafka import KafkaBroker
from streams.settings import Settings
from streams.testing import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def as_lists(recs: list[Recommendation]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(r.event_id, r.policy, [(i.item_id, i.reason) for i in r.items]) for r in recs]


@pytest.mark.parametrize("policy", ["dpp_explore", "calibrated"])
async def test_through_kafka_publishes_exactly_the_offline_lists(
    kafka_broker: KafkaBroker, tmp_path: Path, policy: str
) -> None:
    data = load_dataset("movielens")
    events = sample_users(data.events, 4, seed=3)[:240]
    touched = {e.item_id for e in events}
    items = [it for i, it in enumerate(data.items) if it.item_id in touched or i < 400]
    vectors = np.random.default_rng(0).normal(size=(len(items), EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    base = Settings(
        kafka_bootstrap=kafka_broker.bootstrap, batch_size=1, batch_timeout_s=0.005, session_timeout_s=6.0,
        cache_dir=tmp_path, web_port=free_ports(1)[0],
    )
    settings = run_settings(policy_settings(policy, base))
    assert settings.partitions == 1 and settings.batch_size == 1

    with threadpool_limits(1):  # as the worker runs
        system = make_system(policy, settings, build_catalog(items, vectors, settings))
        offline = [rec for _, rec in replay(system, events, settings.batch_size)]
    online = await published_through_kafka(settings, items, vectors, events, timeout_s=300)

    assert len(online) == len(offline) == len(events)
    assert as_lists(online) == as_lists(offline)
    scores = [[i.score for i in r.items] for r in online], [[i.score for i in r.items] for r in offline]
    assert scores[0] == scores[1]
    assert sum(len(r.items) == settings.k for r in offline) == len(events), "full lists, not empty ones"
    if policy == "dpp_explore":
        assert any(i.reason == "explore" for r in online for i in r.items)

    # and so the metrics, computed from either, are the same
    rows = {it.item_id: n for n, it in enumerate(items)}
    genres = [frozenset(it.categories) for it in items]
    summaries = []
    for recs in (online, offline):
        preq, run = Prequential(events, {it.item_id: it.categories for it in items}, policy), RunMetrics(
            rows, vectors, genres
        )
        for event, rec in zip(events, recs, strict=True):
            if (scored := preq.feed(event, rec)) is not None:
                run.add(scored)
        assert run.lists > 50
        summaries.append(run.summary())
    assert summaries[0] == summaries[1]
