"""Wires :class:`streams.metrics.Metrics` into the Faust app: ``/metrics`` and consumer lag.

``/metrics`` is served by Faust's own web server (aiohttp, on ``web_host``/``web_port``) through Faust's
Prometheus sensor, given our registry: Faust's ``streamrec_faust_*`` families and our ``streamrec_*``
ones come from one endpoint. faust-streaming 0.15.3 already observes its latencies in milliseconds with
millisecond buckets (5 ms to 10 s; a test keeps an eye on that). Its ``events_runtime_ms`` stays empty
here: the batches are acked without the sensor's per-event state, which is why we measure ourselves.
Faust's end/committed offset gauges only move when messages arrive, so the lag is measured here too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import ProcessCollector

from streams.metrics import METRICS_PATH, Metrics
from streams.security import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Prefix of Faust's sensor metrics; its default (the app id) would change names with every deployment.
FAUST_PREFIX = "streamrec_faust"
#: How often the consumer lag is measured (two cheap offset requests to the broker).
LAG_INTERVAL_S = 5.0


def serve_metrics(app: faust.App, settings: Settings, metrics: Metrics) -> None:
    """Serve ``metrics`` (with Faust's sensor and the process' CPU/memory) at :data:`METRICS_PATH`, and
    measure the consumer lag of the events topic every :data:`LAG_INTERVAL_S`."""
    ProcessCollector(registry=metrics.registry)
    setup_prometheus_sensors(app, pattern=METRICS_PATH, registry=metrics.registry, name_prefix=FAUST_PREFIX)

    async def track_consumer_lag() -> None:
        admin: AIOKafkaAdminClient | None = None
        try:
            while True:
                await asyncio.sleep(LAG_INTERVAL_S)
                try:
                    if admin is None:
                        admin = AIOKafkaAdminClient(**KafkaConnection.from_settings(settings).aiokafka())
                        await admin.start()
                    metrics.set_consumer_lag(await consumer_lag(app, admin, settings.topic_events))
                except Exception as exc:  # not assigned yet, a rebalance, a broker hiccup: next round
                    log.debug("consumer lag not measured: %r", exc)
        finally:
            if admin is not None:
                await admin.close()

    app.task(track_consumer_lag)


async def consumer_lag(app: faust.App, admin: AIOKafkaAdminClient, topic: str) -> dict[int, int]:
    """End offset minus the group's committed offset, for each partition of ``topic`` this worker owns
    (a partition never committed counts from its earliest offset)."""
    tps: list[Any] = sorted(tp for tp in app.consumer.assignment() if tp.topic == topic)
    if not tps:
        return {}
    ends = await app.consumer.highwaters(*tps)
    committed = await admin.list_consumer_group_offsets(
        app.conf.id, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
    )
    start = {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    missing = [tp for tp in tps if (tp.topic, tp.partition) not in start]
    if missing:
        earliest = await app.consumer.earliest_offsets(*missing)
        start.update(((tp.topic, tp.partition), off) for tp, off in earliest.items())
    return {tp.partition: max(0, ends[tp] - start[tp.topic, tp.partition]) for tp in tps}
