"""``--through-kafka``: the same replay through local Kafka and real ``streamrec worker`` processes.

Per policy: fresh topics with one partition (one global order, the order of the offline replay),
the catalog's cached vectors written to ``<items>-vectors`` as the items agent writes them (so
the worker holds the very vectors the offline mode uses, with no re-embedding), a worker started
with the policy's settings through its environment, every event produced keyed by user, and every
list consumed from the recommendations topic. Baselines are not part of the streaming app and are
always replayed in-process.

With ``workers > 1`` the events topic has 4 partitions split between the workers, which either serve
from the snapshots of one learner (``learner=True``: ``--role serve`` and ``--role learn``) or each learn
their own shared models from their own partitions (``--role both``, the per-worker models).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from streams.contracts import EmbeddedItem, Event, Item, Recommendation, b64_vector, vectors_topic_name
from streams.demo.run import local_kafka
from streams.evaluate.baselines import BASELINES
from streams.evaluate.run import Evaluation, Source, policy_settings
from streams.harness import RecommendationCollector, WorkerProcess, create_app_topics, produce, run_names
from streams.local.kafka import free_port
from streams.retrieval import Catalog
from streams.settings import Settings

#: Events partitions when more than one worker replays.
SPLIT_PARTITIONS = 4
#: How often the learner publishes during a replay: the replay runs years of events in minutes, so the
#: production default (30 s) would leave the workers a large share of the stream behind.
REPLAY_SNAPSHOT_INTERVAL_S = 0.2


def run_settings(settings: Settings, workers: int = 1) -> Settings:
    """``settings`` on fresh topics (one partition for one worker) and a fresh consumer group, table and port."""
    names = run_names("eval")
    return settings.model_copy(
        update={
            **names,
            "partitions": 1 if workers == 1 else SPLIT_PARTITIONS,
            "snapshot_interval_s": REPLAY_SNAPSHOT_INTERVAL_S,
            "encoder": "local",  # never asked: the vectors are in the topic already
            "web_port": free_port(),
            "data_dir": settings.cache_dir / "evaluate" / "worker" / names["app_id"],
        }
    )


async def published_through_kafka(
    settings: Settings,
    items: Sequence[Item],
    vectors: npt.NDArray[np.float32],
    events: Sequence[Event],
    advance: Callable[[int], None] | None = None,
    timeout_s: float | None = None,
    workers: int = 1,
    learner: bool = False,
    rate: float = 0.0,
) -> list[Recommendation]:
    """Every list real workers with ``settings`` publish for ``events``, in event order: ``workers``
    processes, serving from one more process's snapshots if ``learner``, else each learning itself;
    ``rate`` > 0 offers the events at that many per second.

    ``settings`` should come from :func:`run_settings` (fresh topics).
    """
    s = settings
    await create_app_topics(s)
    embedded = (
        (it.item_id, EmbeddedItem(item=it, vector_b64=b64_vector(vec)))
        for it, vec in zip(items, vectors, strict=True)
    )
    await produce(s.kafka_bootstrap, vectors_topic_name(s), embedded)
    collector = RecommendationCollector(s.kafka_bootstrap, s.topic_recommendations)
    await collector.start()
    processes = [WorkerProcess(one, one.data_dir / "worker.log") for one in roles(s, workers, learner)]
    try:
        with contextlib.ExitStack() as running:
            for process in processes:
                running.enter_context(process)
            for process in processes:
                await asyncio.to_thread(process.wait_until, lambda st: st["catalog_loaded"], 300, "catalog loaded")
            for process in processes[:workers]:
                await asyncio.to_thread(
                    process.wait_until, lambda st: st["catalog_ready"] and st["items"] >= len(items), 300,
                    "catalog loaded",
                )
            await produce(s.kafka_bootstrap, s.topic_events, ((e.user_id, e) for e in events), rate=rate)
            loop = asyncio.get_running_loop()
            timeout_s = timeout_s or 120.0 + 0.1 * len(events)  # generous: the machine may be shared
            deadline = loop.time() + timeout_s
            done = 0
            while len(collector.received) < len(events):
                for process in processes:
                    if process.proc is not None and process.proc.poll() is not None:
                        raise RuntimeError(f"worker died:\n{process.log_tail()}")
                if loop.time() > deadline:
                    raise TimeoutError(f"{len(collector.received)} of {len(events)} lists after {timeout_s:.0f} s")
                if advance is not None and len(collector.received) > done:
                    advance(len(collector.received) - done)
                    done = len(collector.received)
                await asyncio.sleep(0.2)
            if advance is not None:
                advance(len(events) - done)
    finally:
        await collector.stop()
    by_event = {rec.event_id: rec for _, rec in collector.received}
    return [by_event[e.event_id] for e in events]


def roles(settings: Settings, workers: int, learner: bool) -> list[Settings]:
    """The settings of each process: ``workers`` workers (serving only, with a learner), then the learner."""
    def process(role: str, name: str) -> Settings:
        return settings.model_copy(update={"role": role, "web_port": free_port(), "data_dir": settings.data_dir / name})

    serving = [process("serve" if learner else "both", f"worker{i}") for i in range(workers)]
    return serving + ([process("learn", "learner")] if learner else [])


def _through_kafka(
    ev: Evaluation, workers: int, learner: bool, rate: float, name: str, catalog: Catalog,
    advance: Callable[[int], None],
) -> Iterable[tuple[Event, Recommendation]]:
    settings = run_settings(policy_settings(name, ev.settings), workers)
    with local_kafka(settings):
        recs = asyncio.run(
            published_through_kafka(
                settings, ev.items, ev.vectors, ev.events, advance, workers=workers, learner=learner, rate=rate
            )
        )
    return zip(ev.events, recs, strict=True)


def kafka_sources(
    ev: Evaluation, names: Iterable[str], workers: int = 1, learner: bool = True, rate: float = 0.0
) -> dict[str, Source]:
    """Where ``run_evaluation`` takes each policy's lists from in ``--through-kafka`` mode: one worker, or
    ``workers`` serving from one learner's snapshots (``learner``) or each learning its own models; the
    events offered at ``rate`` per second (0: as fast as they go)."""
    through = functools.partial(_through_kafka, ev, workers, learner and workers > 1, rate)
    return {name: through for name in names if name not in BASELINES}
