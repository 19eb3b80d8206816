"""The Faust app: topics, the user-state store and the agents that wire the recommender to Kafka.

Data flow::

    items --(items agent: encode in batches)--> <items>-vectors (compacted)
    <items>-vectors --(catalog loader in every worker, whole topic)--> local Catalog + index
    events --(events agent, keyed by user_id)--> user-state store --> recommendations
    anything unusable --> dead-letter topic, with its reason and original bytes

    with --role serve and one --role learn process:
    events agent --(what each batch teaches the shared models)--> <app>-learning
    <app>-learning --(learner, every partition)--> shared models --(snapshots)--> <app>-models (compacted)
    <app>-models --(snapshot follower in every serving worker)--> swapped in between batches

The encoder runs once per item version wherever the items partition lives, and every
worker still sees the whole catalog, so events can be spread over any number of workers.
This module is wiring only: a batch's logic is in :mod:`streams.app.items` and
:mod:`streams.app.events`, publishing and committing in :mod:`streams.app.guarantee`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import StreamT
from faust.web import Request, Response, View

from encoders import EMBEDDING_DIM
from streams.app import faust_internals
from streams.app.catalog import CatalogLoader, catalog_status
from streams.app.dead_letters import DeadLetters
from streams.app.events import EventsHandler
from streams.app.guarantee import declare_guarantee
from streams.app.input import CATCH_UP_S, Input
from streams.app.items import ItemsHandler, make_encoder
from streams.app.learner import Learner
from streams.app.observability import serve_metrics
from streams.app.snapshots import SnapshotFollower
from streams.app.waiting import WAKE_S, Waiting
from streams.build import build_recommender, build_shared_models, make_catalog
from streams.contracts import vectors_topic_name
from streams.contracts.topics import lessons_topic_name, models_topic_name
from streams.metrics import InstrumentedEncoder, ListProbe, Metrics
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the streamrec Faust app from settings (one app per worker process)."""
    s = settings or Settings()
    if s.role == "learn":
        return create_learner_app(s)
    kafka = KafkaConnection.from_settings(s)
    app = faust_app(s, kafka)
    topic = functools.partial(raw_topic, app, partitions=s.partitions)
    # The agents' input topics do not ack: each Input commits what was handled (see streams.app.input).
    items_topic, events_topic = topic(s.topic_items, compacting=True, acks=False), topic(s.topic_events, acks=False)
    vectors_topic = topic(vectors_topic_name(s), compacting=True)
    outputs = [vectors_topic, topic(s.topic_recommendations), topic(s.topic_dead_letter)]
    serving_only = s.role == "serve"
    if serving_only:
        outputs += [topic(lessons_topic_name(s)), models_topic(app, s)]
    guarantee = declare_guarantee(app, s, kafka, outputs)

    catalog = make_catalog(s, EMBEDDING_DIM)
    recommender = build_recommender(s, catalog)
    metrics = Metrics()
    metrics.prepare(policies=recommender.policies, encoder=s.encoder)
    metrics.track_sizes(items=lambda: catalog.embedded_count, users=lambda: len(guarantee.states))
    serve_metrics(app, s, metrics)
    loader = CatalogLoader(s, catalog)
    metrics.track_catalog(lambda: catalog_status(loader))
    dead_letters = DeadLetters(s.topic_dead_letter, metrics)
    # The encoder is created on first use, inside the worker's event loop.
    encoder = functools.cache(lambda: InstrumentedEncoder(make_encoder(s), metrics, s.encoder))
    embed = ItemsHandler(encoder, dead_letters, vectors_topic_name(s))
    follower = None
    if serving_only:
        follower = SnapshotFollower(
            s, models_topic_name(s), loader, recommender, lambda: build_shared_models(s, catalog), metrics,
            lambda: {tp.partition: offset for tp, offset in events_input.next.items()},
            lessons_topic_name(s) if s.follow_lessons else None,
        )
    waiting = Waiting(recommender.held_items)
    metrics.track_waiting(waiting.events, lambda: waited_s(waiting))
    recommend = EventsHandler(recommender, guarantee.states, loader, dead_letters, metrics, ListProbe(catalog, metrics),
                              s.topic_recommendations, guarantee.changelog,
                              lessons_topic_name(s) if serving_only else None, follower.ready if follower else None,
                              follower.own if follower else None, waiting=waiting, timeout_s=s.unknown_item_timeout_s,
                              max_parked=s.max_waiting_events)
    items_input, events_input = (
        Input(app, guarantee, guarantee.reader(), work, app.conf.broker_commit_interval, metrics.input_holes_read)
        for work in (embed, recommend)
    )

    async def load_catalog() -> None:
        for output in outputs:
            await output.maybe_declare()
        if follower is not None:
            await follower.announced.wait()  # the snapshot's items numbered first: it loads as it is
        await loader.run()

    async def embed_items(stream: StreamT[bytes]) -> None:
        await items_input.run(stream, s.encoder_batch_size, s.batch_timeout_s)

    async def recommend_events(stream: StreamT[bytes]) -> None:
        await events_input.run(stream, s.batch_size, s.batch_timeout_s)

    async def before_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust sends this once the partitions are paused, before its consumer leaves the group: the
        # batches in hand are finished and committed first, then the guarantee lets its producers go.
        for agent_input in (items_input, events_input):
            await agent_input.drain()
        await guarantee.on_shutdown(sender, *args, signal=signal, **kwargs)

    async def wake_waiting() -> None:  # users waiting for items whose item came, or whose wait is over
        if loader.ready.is_set():
            waiting.rebuild(guarantee.states, guarantee.generation())
            await events_input.tick(s.topic_events, recommend.wake)

    async def catch_up() -> None:  # records left waiting at a partition's end (see Input.catch_up)
        await items_input.catch_up(s.topic_items, s.encoder_batch_size)
        await events_input.catch_up(s.topic_events, s.batch_size)

    async def commit_handled() -> None:  # what the last batches before a quiet spell handled
        for agent_input in (items_input, events_input):
            await agent_input.commit()

    def status() -> dict[str, Any]:
        models: dict[str, Any] = {"role": s.role}
        if follower is not None:
            snap = follower.serving
            models |= {"snapshot": snap.version if snap else None, "snapshot_age_s": round(follower.age_s(), 1),
                       "events_behind": follower.events_behind(), "restored": follower.restored}
        return {**catalog_status(loader), "users": len(guarantee.states), "events_waiting": waiting.events(),
                "models": models}

    # 503 until every item on the items topic has its vector (and, serving only, the snapshot is loaded)
    status_pages(app, status, lambda: loader.caught_up and (follower is None or follower.ready.is_set()))
    app.on_before_shutdown.connect(before_shutdown)
    app.task(load_catalog)
    if follower is not None:
        app.task(follower.run)
    app.agent(items_topic, name="embed_items")(embed_items)
    app.agent(events_topic, name="recommend")(recommend_events)
    upkeep(app, app.conf.broker_commit_interval, commit_handled)
    upkeep(app, WAKE_S, wake_waiting)
    upkeep(app, CATCH_UP_S, catch_up)
    return app


def upkeep(app: faust.App, interval_s: float, fun: Callable[[], Awaitable[None]]) -> None:
    """Run ``fun`` every ``interval_s`` as ``app.timer`` does, but a failed run (the broker away) is logged
    and the next one comes at the next interval: an exception in a timer would crash the worker."""

    @functools.wraps(fun)
    async def guarded() -> None:
        try:
            await fun()
        except Exception:
            log.exception("%s failed; again in %.1f s", fun.__name__, interval_s)

    app.timer(interval_s)(guarded)


def waited_s(waiting: Waiting) -> float:
    """How long the event parked longest has waited (0: none)."""
    oldest = waiting.oldest_parked_at()
    return 0.0 if oldest is None else max(0.0, time.time() - oldest)


def create_learner_app(s: Settings) -> faust.App:
    """The learner role's app: the catalog (item ids and vectors) and :class:`Learner`, no agents; its own
    Faust app id (``<app>-learner``), so it never joins the serving workers' group."""
    kafka = KafkaConnection.from_settings(s)
    app = faust_app(s.model_copy(update={"app_id": f"{s.app_id}-learner"}), kafka)
    catalog = make_catalog(s, EMBEDDING_DIM)
    metrics = Metrics()
    serve_metrics(app, s, metrics)
    loader = CatalogLoader(s, catalog)
    metrics.track_catalog(lambda: catalog_status(loader))
    learner = Learner(s, lessons_topic_name(s), models_topic_name(s), loader, build_shared_models(s, catalog), metrics)
    topics = [raw_topic(app, lessons_topic_name(s), partitions=s.partitions), models_topic(app, s),
              raw_topic(app, vectors_topic_name(s), partitions=s.partitions, compacting=True)]

    async def learn() -> None:
        for declared in topics:
            await declared.maybe_declare()
        await asyncio.gather(load_catalog(), learner.run())

    async def load_catalog() -> None:
        await learner.announced.wait()  # the snapshot's items numbered first: it loads as it is
        await loader.run()

    status_pages(app, lambda: {**catalog_status(loader), "models": learner.status()}, learner.ready.is_set)
    app.task(learn)
    return app


def models_topic(app: faust.App, s: Settings) -> faust.TopicT:
    """The snapshots' topic: compacted, one partition (a snapshot's chunks stay in order)."""
    return raw_topic(app, models_topic_name(s), partitions=1, compacting=True)


def status_pages(app: faust.App, status: Callable[[], dict[str, Any]], ready: Callable[[], bool]) -> None:
    """``/streamrec/status/`` (``status()`` as JSON) and ``/streamrec/ready/`` (the same, 503 until ``ready()``)."""

    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(status())

    class Ready(View):
        async def get(self, request: Request) -> Response:
            return self.json(status(), status=200 if ready() else 503)

    app.page("/streamrec/status/")(Status)
    app.page("/streamrec/ready/")(Ready)


def faust_app(s: Settings, kafka: KafkaConnection) -> faust.App:
    """The Faust app of settings ``s``, before its topics and agents."""
    app = faust.App(
        s.app_id,
        broker=kafka.faust_broker(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        datadir=str(s.data_dir),
        web_host=s.web_host,
        web_bind=s.web_host,
        web_port=s.web_port,
        topic_partitions=s.partitions,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=max(s.session_timeout_s / 10, 0.5),
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        # No linger: a batch's output is sent at once and waited on (the next batch waits for its acks),
        # so lingering only adds to every list's latency: 2 ms gave p50 30 ms at 100 events/s against
        # 18 ms without, and the same throughput flat out (the client still packs what queues up while
        # a request is in flight, in batches of up to 1 MB per partition).
        producer_linger=0.0,
        producer_max_batch_size=1 << 20,
        broker_max_poll_records=2 * s.batch_size,
    )

    # Fetches that wait for a few KB (or 10 ms): at 1,000 events/s one worker here fell behind (p99 1-2 s)
    # answering fetches of one or two records each; with 16 KB it kept up (p99 ~0.2-0.3 s), for ~3-5 ms more
    # p50 at 100 events/s. Set at each assignment: the consumer has started by then.
    if s.fetch_min_bytes > 1:

        async def tune_fetches(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            if not faust_internals.tune_fetches(app, s.fetch_min_bytes, s.fetch_max_wait_ms):
                log.warning("fetches not tuned: the consumer has no fetcher yet")

        app.on_partitions_assigned.connect(tune_fetches)
    return app


def raw_topic(app: faust.App, name: str, **kw: Any) -> faust.TopicT:
    """A topic of raw bytes keys and values (the app decodes them itself, with reasons)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw)
