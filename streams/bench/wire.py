"""The worker's own work around the recommender, per event, on one core, without Kafka.

* **decode**: an ``events`` message and an ``<items>-vectors`` message (what a worker reads at start),
  each through the strict parser alone and through the decoder as the worker calls it (the orjson fast
  path, the strict one as fallback): microseconds per message, the same messages for both;
* **encode**: one list of ``k`` items to its wire bytes;
* **handler**: :class:`~streams.app.events.EventsHandler` on micro-batches of MovieLens-shaped events
  over 4 partitions, the recommender's answer precomputed (``k`` items per list, from every candidate
  source): ``take`` (decode, key and catalog checks, replay stamps), ``answer`` (encode the lists, stamp
  the states) and ``published`` (the metrics probe: latency, candidate pools, ILD, exploration share),
  in ms of CPU per event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from streams.app.batch import Outbox, Record
from streams.app.catalog import CatalogLoader
from streams.app.dead_letters import DeadLetters
from streams.app.events import EventsHandler
from streams.app.guarantee.states import PartitionedStates
from streams.contracts import EmbeddedItem, Event, Item, Recommendation, RecommendedItem, b64_vector, decode, encode
from streams.metrics import ListProbe, Metrics
from streams.recommender import BatchResult, ListTrace
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from streams.testing import HoldsNothing

PARTITIONS = 4
SOURCES = ("similar", "co-visited", "collaborative", "trending", "fresh")


def _us_per_call(fn: Callable[[Any], object], args: Sequence[Any], repeats: int = 3) -> float:
    """The best of ``repeats`` passes over ``args``, CPU microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for a in args:
            fn(a)
        best = min(best, time.process_time() - start)
    return 1e6 * best / len(args)


def _events(n: int, n_items: int, n_users: int = 671) -> list[Event]:
    return [
        Event(event_id=f"ml-{i}", user_id=str(i % n_users), item_id=str(i * 7 % n_items), type="rating",
              value=(i % 10) / 2, ts=1.2e9 + i * 13.37)
        for i in range(n)
    ]


class _Canned(HoldsNothing):
    """The recommender's part of a batch, precomputed in shape: ``k`` items per list, every source in the
    traces, a 900-byte state per user (what a MovieLens user's state weighs)."""

    def __init__(self, n_items: int, k: int) -> None:
        self.n_items, self.k = n_items, k

    def process(self, events: Sequence[tuple[bytes, Event]], states: Mapping[bytes, bytes]) -> BatchResult:
        lists = [
            Recommendation(
                user_id=e.user_id, event_id=e.event_id, generated_at=1.7e9, policy="dpp_explore",
                items=[RecommendedItem(item_id=str((n * 31 + 97 * j) % self.n_items), score=0.1 * j + 0.0123,
                                       reason=SOURCES[j % len(SOURCES)]) for j in range(self.k)],
            )
            for n, (_, e) in enumerate(events)
        ]
        traces = [ListTrace("dpp_explore", "dpp", Counter(dict.fromkeys(SOURCES, 60)), 1e-4) for _ in events]
        return BatchResult(lists, {key: b"s" * 900 for key, _ in events}, traces, [])


def _handler(catalog: Catalog, recommender: _Canned) -> EventsHandler:
    loader = CatalogLoader(Settings(), catalog)
    loader.ready.set()
    metrics = Metrics()
    return EventsHandler(recommender, PartitionedStates(), loader, DeadLetters("dlq", metrics), metrics,
                         ListProbe(catalog, metrics), "recs", "changelog")


def _handler_ms(catalog: Catalog, events: list[Event], batch: int, k: int) -> dict[str, float]:
    """CPU ms per event of each step of the events handler, over ``events`` in batches of ``batch``."""
    recommender = _Canned(len(catalog), k)
    handler = _handler(catalog, recommender)
    records = [Record("events", i % PARTITIONS, i, e.user_id.encode(), encode(e), 1.7e9) for i, e in enumerate(events)]
    everything = {TopicPartition("events", p) for p in range(PARTITIONS)}
    cpu = {"take": 0.0, "answer": 0.0, "published": 0.0}
    loop = asyncio.new_event_loop()  # take is a coroutine (it may read the items topic): one loop for all
    for start in range(0, len(records), batch):
        out = Outbox()
        t0 = time.process_time()
        taken = loop.run_until_complete(handler.take(records[start : start + batch], out))
        t1 = time.process_time()
        result = recommender.process(taken.good, {})
        t2 = time.process_time()
        handler.answer(taken, result, out)
        t3 = time.process_time()
        out.published(everything)
        t4 = time.process_time()
        cpu["take"] += t1 - t0
        cpu["answer"] += t3 - t2
        cpu["published"] += t4 - t3
    loop.close()
    ms = {f"{step}_ms_per_event": 1e3 * s / len(events) for step, s in cpu.items()}
    return {**ms, "total_ms_per_event": sum(ms.values())}


def bench_wire(
    n_items: int = 9066, events: int = 20_000, batch: int = 500, k: int = 10, d: int = 384, seed: int = 0
) -> dict[str, Any]:
    """The figures of the module docstring for a catalog of ``n_items`` random ``d``-dim vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog(d)
    catalog.upsert([CatalogItem(str(i), f"Movie {i} (1999)", ("Drama", "Comedy")) for i in range(n_items)], vectors)
    stream = _events(events, n_items)
    handler = _handler_ms(catalog, stream, batch, k)  # first: the messages made below would weigh on its GC
    raw_events = [encode(e) for e in stream[:5000]]
    raw_items = [
        encode(EmbeddedItem(item=Item(item_id=str(i), title=f"Movie {i} (1999)", categories=["Drama", "Comedy"],
                                      created_at=1e9), vector_b64=b64_vector(vectors[i])))
        for i in range(min(n_items, 2000))
    ]
    lists = _Canned(n_items, k).process([(e.user_id.encode(), e) for e in stream[:2000]], {}).lists
    return {
        "items": n_items,
        "batch_size": batch,
        "k": k,
        "decode_us": {
            "event_strict": _us_per_call(lambda raw: decode(raw, Event, fast=False), raw_events),
            "event": _us_per_call(lambda raw: decode(raw, Event), raw_events),
            "embedded_item_strict": _us_per_call(lambda raw: decode(raw, EmbeddedItem, fast=False), raw_items),
            "embedded_item": _us_per_call(lambda raw: decode(raw, EmbeddedItem), raw_items),
        },
        "encode_us": {"list": _us_per_call(encode, lists)},
        "handler": {"events": events, **handler},
    }
