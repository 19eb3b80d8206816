"""A real Prometheus scrapes a real worker while events flow through real Kafka (and Triton); then every
query of the Grafana dashboard and every alert rule runs through Prometheus' HTTP API."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from streams.app.admin import acreate_topics
from streams.app.observability import FAUST_PREFIX, consumer_lag
from streams.harness import WorkerProcess, create_app_topics, produce
from streams.local.kafka import KafkaBroker
from streams.local.prometheus import PrometheusServer, find_binary
from streams.local.triton import TritonServer
from streams.metrics import metrics_url
from streams.settings import Settings
from streams.testing import free_ports
from tests.integration.promql import JOB, RULES, SCRAPE_CONFIG, SYNTHETIC, dashboard_exprs, metric_names, rule_exprs
from tests.integration.test_pipeline import catalog, click, event_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = [("astro", b"{not json"), ("chef", b'{"event_id": "x", "user_id": "chef"}')]


@dataclass
class Scraped:
    prometheus: PrometheusServer
    exposition: str  # the worker's /metrics once everything was processed
    ids: set[str]  # every user, item and event id the worker saw
    settings: Settings


def scrape_config(template: Path, target: str, rules: Path, dest: Path) -> Path:
    """The shipped scrape config, pointed at ``target``, scraping and evaluating every second."""
    config = yaml.safe_load(template.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == JOB)
    job["static_configs"] = [{"targets": [target]}]
    dest.write_text(yaml.safe_dump(config))
    return dest


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text: str = resp.read().decode()
        return text


async def wait_for(
    prometheus: PrometheusServer, expr: str, want: float, timeout_s: float, worker: WorkerProcess
) -> None:
    """Until ``expr`` (one series) is ``want`` in Prometheus, i.e. scraped after the worker got there."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    got: Any = None
    while asyncio.get_running_loop().time() < deadline:
        got = await asyncio.to_thread(prometheus.query, expr)
        if got and float(got[0]["value"][1]) == want:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{expr} = {got}, want {want}\n{worker.log_tail()}")


@pytest.fixture(scope="module")
async def scraped(
    kafka_broker: KafkaBroker, triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scraped]:
    tmp = tmp_path_factory.mktemp("observability")
    run = uuid.uuid4().hex[:8]
    worker_port, prometheus_port = free_ports(2)
    topics = {f"topic_{t}": f"o{run}-{t}" for t in ("items", "events", "recommendations", "dead_letter")}
    settings = Settings(
        kafka_bootstrap=kafka_broker.bootstrap, app_id=f"streamrec-obs-{run}", encoder="triton",
        triton_url=triton_server.url, web_port=worker_port, data_dir=tmp / "worker", **topics,
    )
    await create_app_topics(settings)
    config = scrape_config(SCRAPE_CONFIG, f"{settings.web_host}:{worker_port}", RULES, tmp / "prometheus.yml")
    prometheus = PrometheusServer(home=tmp / "prometheus", config=config, port=prometheus_port)
    items, events = catalog(), event_stream()
    events += [click(100 + n, e.user_id, e.item_id, "view") for n, e in enumerate(events)]  # more traffic
    with WorkerProcess(settings, tmp / "worker.log") as worker:
        await asyncio.to_thread(prometheus.start)
        try:
            # scraped before anything happens, so that every rate starts from the worker's zeros
            await wait_for(prometheus, f'up{{job="{JOB}"}}', 1, 60, worker)
            await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in items))
            await asyncio.to_thread(
                worker.wait_until, lambda st: st["catalog_ready"] and st["items"] == len(items), 180, "catalog loaded"
            )
            stream: list[tuple[str, Any]] = [(e.user_id, e) for e in events] + BAD
            await produce(settings.kafka_bootstrap, settings.topic_events, stream, rate=10.0)
            total = f'sum(streamrec_recommendations_total{{job="{JOB}"}})'
            await wait_for(prometheus, total, len(events), 120, worker)
            lag = f'streamrec_consumer_lag_messages{{job="{JOB}"}}'
            await wait_for(prometheus, f"count({lag})", settings.partitions, 30, worker)
            await wait_for(prometheus, f"sum({lag})", 0, 30, worker)  # all committed: caught up
            exposition = await asyncio.to_thread(fetch, metrics_url(settings))
            ids = {e.user_id for e in events} | {e.event_id for e in events} | {it.item_id for it in items}
            yield Scraped(prometheus, exposition, ids, settings)
        finally:
            await asyncio.to_thread(prometheus.stop)


def samples(exposition: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(exposition) for s in family.samples]


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def test_every_dashboard_query_runs_and_returns_data(scraped: Scraped) -> None:
    empty = []
    for title, exprs in dashboard_exprs().items():
        for expr in exprs:
            result = await asyncio.to_thread(scraped.prometheus.query, expr)  # raises on a PromQL error
            if not finite(result):
                empty.append(f"{title}: {expr} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


async def test_every_alert_rule_evaluates(scraped: Scraped) -> None:
    for expr in rule_exprs().values():
        await asyncio.to_thread(scraped.prometheus.query, expr)  # raises on a PromQL error
    # the server loaded the shipped rules file too, and evaluates every rule without error
    groups = (await asyncio.to_thread(scraped.prometheus.api, "rules"))["groups"]
    health = {rule["name"]: (rule["health"], rule.get("lastError") or None) for g in groups for rule in g["rules"]}
    assert health == dict.fromkeys(rule_exprs(), ("ok", None))


def declared(exposition: str) -> set[str]:
    """Every series name the worker's families stand for, also for a family with no series yet."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"]}
    return {f.name + sfx for f in text_string_to_metric_families(exposition) for sfx in suffixes.get(f.type, [""])}


def test_every_metric_the_dashboard_and_rules_use_is_exported(scraped: Scraped) -> None:
    exported = declared(scraped.exposition)
    used = {name for exprs in dashboard_exprs().values() for e in exprs for name in metric_names(e)}
    used |= {name for e in rule_exprs().values() for name in metric_names(e)}
    assert used - SYNTHETIC <= exported, f"not exported by the worker: {sorted(used - SYNTHETIC - exported)}"


def test_no_user_item_or_event_id_in_labels(scraped: Scraped) -> None:
    values = {v for s in samples(scraped.exposition) for v in s.labels.values()}
    assert not values & scraped.ids, values & scraped.ids


def test_what_flowed_is_counted(scraped: Scraped) -> None:
    exported = samples(scraped.exposition)

    def value(name: str, **labels: str) -> float:
        return sum(s.value for s in exported if s.name == name and labels.items() <= s.labels.items())

    lists = value("streamrec_recommendations_total")
    assert lists == value("streamrec_events_consumed_total") == value("streamrec_end_to_end_latency_seconds_count")
    assert value("streamrec_impressions_total") == scraped.settings.k * lists
    assert value("streamrec_list_ild_count") == lists and 0 < value("streamrec_list_ild_sum") < 2 * lists
    assert value("streamrec_rerank_duration_seconds_count") == lists
    assert value("streamrec_candidate_pool_size_count", source="similar") > 0
    assert value("streamrec_dead_letters_total", reason="invalid_json") == 1
    assert value("streamrec_dead_letters_total", reason="schema") == 1
    assert value("streamrec_item_index_size") == len(catalog())
    assert value("streamrec_encoder_batch_size_sum", encoder="triton") == len(catalog())
    assert value("streamrec_encoder_errors_total", encoder="triton") == 0
    # Faust's sensor sees the input although it is committed by streams.app.input, not acked through Faust
    produced = {scraped.settings.topic_events: lists + len(BAD), scraped.settings.topic_items: len(catalog())}
    for topic, count in produced.items():
        assert value("streamrec_faust_messages_received_per_topic_total", topic=topic) == count, topic
        assert value("streamrec_faust_topic_partition_offset_commited", topic=topic) == count, topic
    assert value("streamrec_faust_active_messages") >= 0
    # Faust's sensor is on the same endpoint, its latencies in milliseconds with millisecond buckets
    bounds = {s.labels["le"] for s in exported if s.name == "streamrec_faust_producer_send_latency_bucket"}
    assert {"5.0", "10000.0"} <= bounds


def test_prometheus_scrapes_the_worker(scraped: Scraped) -> None:
    (target,) = scraped.prometheus.api("targets")["activeTargets"]
    assert target["labels"]["job"] == JOB and target["health"] == "up", target


def test_our_metrics_pass_promtool_lint(scraped: Scraped) -> None:
    """Names, units and help texts as Prometheus recommends (Faust's own families are not ours to rename)."""
    def family(line: str) -> str:
        return re.sub(r"^# (?:HELP|TYPE) ", "", line)

    ours = [line for line in scraped.exposition.splitlines()
            if family(line).startswith("streamrec_") and not family(line).startswith(FAUST_PREFIX)]
    lint = subprocess.run(
        [str(find_binary("promtool")), "check", "metrics"], input="\n".join(ours) + "\n",
        capture_output=True, text=True, check=False,
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr


async def test_consumer_lag_is_end_minus_committed(kafka_broker: KafkaBroker) -> None:
    """The lag arithmetic against a real broker: a committed partition and one never committed."""
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    await acreate_topics(kafka_broker.bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for partition, n in ((0, 5), (1, 3)):
            for _ in range(n):
                await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await consumer.start()
    await admin.start()
    try:
        consumer.assign(tps)
        await consumer.commit({tps[0]: 2})
        # what consumer_lag uses of a Faust app: its group id and its consumer's assignment and offsets
        faust_consumer = SimpleNamespace(
            assignment=lambda: {*tps, TopicPartition("other-topic", 0)},
            highwaters=lambda *parts: consumer.end_offsets(list(parts)),
            earliest_offsets=lambda *parts: consumer.beginning_offsets(list(parts)),
        )
        app = SimpleNamespace(conf=SimpleNamespace(id=group), consumer=faust_consumer)
        assert await consumer_lag(cast(Any, app), admin, topic) == {0: 3, 1: 3}
    finally:
        await admin.close()
        await consumer.stop()
