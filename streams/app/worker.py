"""The Faust app: topics, the user-state table and the agents that wire the recommender to Kafka.

Data flow::

    items --(items agent: encode in batches)--> <items>-vectors (compacted)
    <items>-vectors --(catalog loader in every worker, whole topic)--> local Catalog + index
    events --(events agent, keyed by user_id)--> user-state table --> recommendations
    anything unusable --> dead-letter topic, with its reason and original bytes

The encoder runs once per item version wherever the items partition lives, and every
worker still sees the whole catalog, so events can be spread over any number of workers.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import MutableMapping, Sequence
from typing import Any, cast

import faust
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import StreamT
from faust.web import Request, Response, View

from encoders import EMBEDDING_DIM, Encoder, EncoderError, LocalEncoder, TritonEncoder
from streams.app.applied import Unstamped, stamp, unstamp
from streams.app.observability import serve_metrics
from streams.app.offsets import Input, Record
from streams.app.output import Delivery, Outbox, Output
from streams.app.transactions import StateRestore, Transactions
from streams.build import build_recommender, make_catalog
from streams.contracts import (
    DeadLetter,
    DecodeError,
    EmbeddedItem,
    Event,
    Item,
    check_event_time,
    decode,
    decode_event,
    decode_item,
    encode,
)
from streams.local.kafka import acreate_topics
from streams.metrics import InstrumentedEncoder, ListProbe, Metrics
from streams.recommender import BatchResult
from streams.retrieval import Catalog, CatalogItem
from streams.security import KafkaConnection, triton_client_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


def make_encoder(settings: Settings) -> Encoder:
    if settings.encoder == "local":
        return LocalEncoder(batch_size=settings.encoder_batch_size)
    return TritonEncoder(
        url=settings.triton_url,
        model=settings.triton_model,
        batch_size=settings.encoder_batch_size,
        timeout_s=settings.encoder_timeout_s,
        **triton_client_kwargs(settings),
    )


def vectors_topic_name(settings: Settings) -> str:
    return f"{settings.topic_items}-vectors"


def to_catalog_item(item: Item) -> CatalogItem:
    return CatalogItem(item.item_id, item.title, tuple(item.categories), item.created_at)


class CatalogLoader:
    """Reads the whole ``<items>-vectors`` topic into the local catalog, then follows it.

    ``ready`` is set once everything that was in the topic at start-up is loaded, so a
    restarted worker does not treat known items as unknown.
    """

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.ready = asyncio.Event()
        #: Held while the catalog is read off the event loop (the recommender's thread), so an
        #: upsert never changes it under a batch in progress.
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        topic = vectors_topic_name(self.settings)
        consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(),
            enable_auto_commit=False,
            group_id=None,
            isolation_level=self.settings.isolation_level,
        )
        await consumer.start()
        try:
            parts = await self._partitions(consumer, topic)
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            pending = {tp for tp, off in end.items() if off > 0}
            if not pending:
                self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batch.values():
                    async with self.lock:
                        self.load([r.value for r in records if r.value is not None])
                if pending:
                    pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
                    if not pending:
                        log.info("catalog loaded: %d items", len(self.catalog))
                        self.ready.set()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        # The topic is declared by the app at start; metadata can lag behind for a moment.
        for _ in range(600):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic!r} does not exist")

    def load(self, values: list[bytes]) -> None:
        """Add (or replace) the items of these ``<items>-vectors`` messages."""
        items: list[CatalogItem] = []
        vectors: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        for raw in values:
            rec = decode(raw, EmbeddedItem)
            vec = np.frombuffer(base64.b64decode(rec.vector_b64), dtype="<f4")
            if vec.shape != (self.catalog.dim,):
                log.error("item %s has a %s-d vector, expected %d", rec.item.item_id, vec.shape, self.catalog.dim)
                continue
            items.append(to_catalog_item(rec.item))
            vectors.append(vec)
        if items:
            self.catalog.upsert(items, np.stack(vectors))


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the streamrec Faust app from settings (one app per worker process)."""
    s = settings or Settings()
    kafka = KafkaConnection.from_settings(s)
    exactly_once = s.processing_guarantee == "exactly_once"
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
        # Lists are ~1 KB: batches of up to 1 MB per partition, lingering 2 ms, keep the producer's
        # requests few without holding a list back noticeably.
        producer_linger=0.002,
        producer_max_batch_size=1 << 20,
        broker_max_poll_records=2 * s.batch_size,
    )

    def raw_topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw
        )

    # The agents' input topics do not ack: each Input commits what was handled (see streams.app.offsets).
    items_topic = raw_topic(s.topic_items, compacting=True, partitions=s.partitions, acks=False)
    vectors_topic = raw_topic(vectors_topic_name(s), compacting=True, partitions=s.partitions)
    events_topic = raw_topic(s.topic_events, partitions=s.partitions, acks=False)
    recs_topic = raw_topic(s.topic_recommendations, partitions=s.partitions)
    dlq_topic = raw_topic(s.topic_dead_letter, partitions=s.partitions)

    # User state: the latest stamped state per user key (streams.app.applied), with a changelog
    # partitioned like the events (by user key), so a batch mixing partitions still writes each
    # user's state to the partition its events live on.
    changelog_name = f"{s.app_id}-user-state-changelog"
    output: Output
    users: MutableMapping[bytes, bytes]
    if exactly_once:
        # No Faust table: the states are written in the transactions and restored by them.
        users = {}
        declare = functools.partial(
            acreate_topics, kafka, {changelog_name: s.partitions}, [changelog_name],
            replication=app.conf.topic_replication_factor,
        )
        restore = StateRestore(kafka, s.topic_events, changelog_name, users, declare)
        output = Transactions(app, kafka, {s.topic_items, s.topic_events}, states=restore)
        app.on_before_shutdown.connect(output.on_shutdown)
    else:
        # key_type/value_type as well as the schema: recovery decodes the changelog by the types alone
        # (JSON otherwise), so without them a restarted worker could not read its state back.
        table = app.Table(
            "user-state",
            default=None,
            key_type=bytes,
            value_type=bytes,
            schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
            partitions=s.partitions,
            use_partitioner=True,
        )
        changelog = table.changelog_topic
        assert changelog.get_topic_name() == changelog_name
        users = cast(MutableMapping[bytes, bytes], table.data)
        output = Delivery({t.get_topic_name(): t for t in (vectors_topic, recs_topic, dlq_topic, changelog)})

    catalog = make_catalog(s, EMBEDDING_DIM)
    recommender = build_recommender(s, catalog)
    metrics = Metrics()
    probe = ListProbe(catalog, metrics)
    metrics.prepare(policies=recommender.policies, encoder=s.encoder)
    metrics.track_sizes(items=lambda: len(catalog), users=lambda: len(users))
    serve_metrics(app, s, metrics)
    loader = CatalogLoader(s, catalog)

    @functools.cache
    def encoder() -> Encoder:  # created on first use, inside the worker's event loop
        return InstrumentedEncoder(make_encoder(s), metrics, s.encoder)

    def dead_letter(out: Outbox, msg: Record, error: DecodeError) -> None:
        """Put the dead-letter message for ``msg`` in ``out``, with the batch's lists."""
        record = DeadLetter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            reason=error.reason,
            detail=error.detail[:1000],
            original_b64=base64.b64encode(msg.value or b"").decode(),
            key_b64=base64.b64encode(msg.key).decode() if msg.key is not None else None,
            failed_at=time.time(),
        )
        log.warning("dead letter from %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)
        out.add(msg.tp, dlq_topic.get_topic_name(), msg.key, encode(record))
        out.after(msg.tp, functools.partial(metrics.dead_letter, error.reason))

    async def load_catalog() -> None:
        for topic in (vectors_topic, recs_topic, dlq_topic):
            await topic.maybe_declare()
        await loader.run()

    app.task(load_catalog)

    async def embed_batch(batch: Sequence[Record]) -> Outbox:
        """One batch of items: embedded (retried until the encoder answers)."""
        out = Outbox()
        good: list[tuple[Record, Item]] = []
        for rec in batch:
            try:
                good.append((rec, decode_item(rec.value)))
            except DecodeError as err:
                dead_letter(out, rec, err)
        if good:
            vectors = await encode_with_retry(encoder(), [item.embedding_text() for _, item in good])
            for (rec, item), vec in zip(good, vectors, strict=True):
                embedded = EmbeddedItem(item=item, vector_b64=b64_vector(vec))
                out.add(rec.tp, vectors_topic.get_topic_name(), item.item_id.encode(), encode(embedded))
        return out

    items_input = Input(app, kafka, embed_batch, output, app.conf.broker_commit_interval, metrics.input_holes_read)

    @app.agent(items_topic)
    async def embed_items(stream: StreamT[bytes]) -> None:
        await items_input.run(stream, s.encoder_batch_size, s.batch_timeout_s)

    async def recommend_batch(batch: Sequence[Record]) -> Outbox:
        """One micro-batch: its lists, dead letters and the user states stamped with their offsets."""
        await loader.ready.wait()
        out = Outbox()
        good: list[tuple[bytes, Event]] = []
        taken: list[Record] = []  # the messages of `good`
        last: dict[bytes, Record] = {}  # per user: the newest event of this batch
        applied: dict[bytes, int] = {}  # per user: the offset its state was stamped with
        replayed = 0
        for rec in batch:
            try:
                event = parse_event(rec, catalog)
            except DecodeError as err:
                dead_letter(out, rec, err)
                continue
            key = cast(bytes, rec.key)
            if key not in applied:
                applied[key] = unstamp(users.get(key))[0]
            if rec.offset <= applied[key]:
                replayed += 1  # applied (and its list delivered) before a restart
                continue
            applied[key] = rec.offset
            last[key] = rec
            good.append((key, event))
            taken.append(rec)
        if replayed:
            metrics.events_replayed(replayed)
        result = BatchResult([], {}, [], [])
        # The recommender's work is CPU-bound: run it off the event loop, which meanwhile keeps
        # fetching, heartbeating and sending. It reads the whole table (learning from expired
        # impressions reads other users' states too) and returns the new states, which the table
        # (whose changelog producer belongs to the loop) takes on the loop.
        if good:
            try:
                async with loader.lock:
                    result = await asyncio.to_thread(recommender.process, good, Unstamped(users))
            except Exception as exc:  # a bug must not drop the batch: its events go to the DLQ instead
                log.exception("recommender failed on a batch of %d events", len(good))
                error = DecodeError("processing_error", f"{type(exc).__name__}: {exc}")
                for rec in taken:
                    dead_letter(out, rec, error)
                good, taken = [], []
        # Dead letters and lists first, then the states stamped with these offsets (see
        # streams.app.applied): at-least-once delivers them in this order, each acknowledged, before
        # the offsets may be committed; exactly-once commits them with the offsets. The changelog is
        # written here rather than through the Faust table (`table[key] = ...` only queues it in
        # Faust's producer buffer, where a commit right after the batch could overtake it).
        recs, traces, rewards = result.lists, result.traces, result.rewards
        for rec, recommendation in zip(taken, recs, strict=True):
            out.add(rec.tp, recs_topic.get_topic_name(), rec.key, encode(recommendation))
        for key, value in result.states.items():
            source, state = last[key].tp, stamp(applied[key], value)
            out.add(source, changelog_name, key, state)
            out.after(source, functools.partial(users.__setitem__, key, state))
        for n, tp in enumerate(dict.fromkeys(rec.tp for rec in taken)):
            mine = [i for i, rec in enumerate(taken) if rec.tp == tp]
            events, stamps = [good[i][1] for i in mine], [taken[i].timestamp for i in mine]
            made = ([recs[i] for i in mine], [traces[i] for i in mine], rewards if n == 0 else [])
            out.after(tp, functools.partial(probe.published, events, stamps, *made))
        return out

    events_input = Input(app, kafka, recommend_batch, output, app.conf.broker_commit_interval, metrics.input_holes_read)

    @app.agent(events_topic)
    async def recommend(stream: StreamT[bytes]) -> None:
        await events_input.run(stream, s.batch_size, s.batch_timeout_s)

    async def commit_handled() -> None:  # what the last batches before a quiet spell handled
        for agent_input in (items_input, events_input):
            await agent_input.commit()

    app.timer(app.conf.broker_commit_interval)(commit_handled)

    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json({"items": len(catalog), "catalog_ready": loader.ready.is_set(), "users": len(users)})

    app.page("/streamrec/status/")(Status)
    return app


def parse_event(msg: Record, catalog: Catalog) -> Event:
    """Decode an ``events`` message and check it can be used; :class:`DecodeError` otherwise."""
    event = check_event_time(decode_event(msg.value))
    if msg.key != event.user_id.encode():
        # State is partitioned by user: an event keyed otherwise would land beside the wrong state.
        raise DecodeError("key_mismatch", "message key must be the event's user_id")
    if event.item_id not in catalog:
        raise DecodeError("unknown_item", f"item {event.item_id!r} is not in the catalog")
    return event


def b64_vector(vec: np.ndarray) -> str:
    return base64.b64encode(vec.astype("<f4").tobytes()).decode()


async def encode_with_retry(encoder: Encoder, texts: Sequence[str], max_backoff_s: float = 30.0) -> np.ndarray:
    """Encode, retrying with backoff until the encoder answers: items are delayed, never dropped."""
    delay = 0.5
    while True:
        try:
            return await encoder.encode(texts)
        except EncoderError as exc:
            log.warning("encoder failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
