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
from collections import ChainMap
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
from streams.contracts import (
    DeadLetter,
    DecodeError,
    EmbeddedItem,
    Event,
    Item,
    Recommendation,
    check_event_time,
    decode,
    decode_event,
    decode_item,
    encode,
)
from streams.metrics import InstrumentedEncoder, ListProbe, Metrics
from streams.recommender import build_recommender, make_index
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
            **KafkaConnection.from_settings(self.settings).aiokafka(), enable_auto_commit=False, group_id=None
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

    # use_partitioner: the changelog partition comes from the key (the user id), exactly as
    # producers partition events, so a batch mixing partitions still writes each user's
    # state to the partition its events live on.
    # key_type/value_type as well as the schema: recovery decodes the changelog by the types alone
    # (JSON otherwise), so without them a restarted worker could not read its state back.
    users = app.Table(
        "user-state",
        default=None,
        key_type=bytes,
        value_type=bytes,
        schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
        partitions=s.partitions,
        use_partitioner=True,
    )

    catalog = Catalog(EMBEDDING_DIM, index=make_index(s, EMBEDDING_DIM))
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

    def dead_letter(msg: Record, error: DecodeError) -> tuple[bytes | None, bytes]:
        """The dead-letter message for ``msg`` (sent with :func:`deliver`, with the batch's lists)."""
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
        metrics.dead_letter(error.reason)
        return msg.key, encode(record)

    async def load_catalog() -> None:
        for topic in (vectors_topic, recs_topic, dlq_topic):
            await topic.maybe_declare()
        await loader.run()

    app.task(load_catalog)

    async def embed_batch(batch: Sequence[Record]) -> None:
        """One batch of items: embedded (retried until the encoder answers) and delivered."""
        good: list[Item] = []
        dead: list[tuple[bytes | None, bytes]] = []
        for ev in batch:
            try:
                good.append(decode_item(ev.value))
            except DecodeError as err:
                dead.append(dead_letter(ev, err))
        await deliver(dlq_topic, dead)
        if good:
            vectors = await encode_with_retry(encoder(), [it.embedding_text() for it in good])
            await deliver(
                vectors_topic,
                [
                    (item.item_id.encode(), encode(EmbeddedItem(item=item, vector_b64=b64_vector(vec))))
                    for item, vec in zip(good, vectors, strict=True)
                ],
            )

    items_input = Input(app, kafka, embed_batch, app.conf.broker_commit_interval, metrics.input_holes_read)

    @app.agent(items_topic)
    async def embed_items(stream: StreamT[bytes]) -> None:
        await items_input.run(stream, s.encoder_batch_size, s.batch_timeout_s)

    async def recommend_batch(batch: Sequence[Record]) -> None:
        """One micro-batch: lists delivered first, then the user states stamped with their offsets."""
        await loader.ready.wait()
        good: list[tuple[bytes, Event]] = []
        taken: list[Record] = []  # the messages of `good`
        produced_at: list[float] = []  # Kafka record timestamps: the end-to-end latency starts there
        dead: list[tuple[bytes | None, bytes]] = []
        last_offset: dict[bytes, int] = {}  # per user: the newest event of this batch
        replayed = 0
        for ev in batch:
            try:
                event = parse_event(ev, catalog)
            except DecodeError as err:
                dead.append(dead_letter(ev, err))
                continue
            key, offset = cast(bytes, ev.key), ev.offset
            if key not in last_offset:
                last_offset[key] = unstamp(users.get(key))[0]
            if offset <= last_offset[key]:
                replayed += 1  # applied (and its list delivered) before a restart
                continue
            last_offset[key] = offset
            good.append((key, event))
            taken.append(ev)
            produced_at.append(ev.timestamp)
        if replayed:
            metrics.events_replayed(replayed)
        recs: list[Recommendation] = []
        # The recommender's work is CPU-bound: run it off the event loop, which meanwhile keeps
        # fetching, heartbeating and sending. Writes collect in `written`; the table (whose
        # changelog producer belongs to the loop) is written back on the loop. Reads fall through
        # to the whole table: learning from expired impressions reads other users' states too.
        written: dict[bytes, bytes] = {}
        if good:
            try:
                async with loader.lock:
                    # ChainMap writes to its first map only, so the read-only view is safe behind it.
                    store = ChainMap(written, cast(MutableMapping[bytes, bytes], Unstamped(users)))
                    recs = await asyncio.to_thread(recommender.process, good, store)
            except Exception as exc:  # a bug must not drop the batch: its events go to the DLQ instead
                log.exception("recommender failed on a batch of %d events", len(good))
                error = DecodeError("processing_error", f"{type(exc).__name__}: {exc}")
                dead.extend(dead_letter(ev, error) for ev in taken)
                good, written = [], {}
        # Lists and dead letters acknowledged by the broker first; then the states stamped with these
        # offsets (see streams.app.applied), acknowledged too; only then may the offsets be committed.
        # The changelog is written here rather than by `users[key] = ...`, which only queues it in
        # Faust's producer buffer, where a commit right after the batch could overtake it.
        await deliver(dlq_topic, dead)
        await deliver(recs_topic, [(rec.user_id.encode(), encode(rec)) for rec in recs])
        states = [(key, stamp(last_offset[key], value)) for key, value in written.items()]
        await deliver(users.changelog_topic, states)
        for key, value in states:
            users.data[key] = value
        if good:
            probe.published([event for _, event in good], produced_at, recs, recommender.traces, recommender.rewards)

    events_input = Input(app, kafka, recommend_batch, app.conf.broker_commit_interval, metrics.input_holes_read)

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


async def deliver(
    topic: faust.TopicT, messages: Sequence[tuple[bytes | None, bytes]], max_backoff_s: float = 30.0
) -> None:
    """Send ``(key, value)`` messages and wait until the broker has them all, re-sending what failed.

    A message whose acknowledgement was lost may arrive twice; none is dropped (at-least-once).
    """
    pending = list(messages)
    delay = 0.5
    while pending:
        futures: list[Any] = []
        try:
            for key, value in pending:
                futures.append(await topic.send(key=key, value=value))
        except Exception as exc:  # the producer refused outright: the rest was never handed over
            log.warning("send to %s failed (%s); retrying", topic.get_topic_name(), exc)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [m for m, r in zip(pending, results, strict=False) if isinstance(r, BaseException)]
        pending = failed + pending[len(futures) :]
        if pending:
            name = topic.get_topic_name()
            log.warning("%d messages to %s not acknowledged; re-sending in %.1f s", len(pending), name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


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
