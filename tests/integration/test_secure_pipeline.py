"""A real worker over SASL_SSL Kafka (SCRAM-SHA-512) and TLS Triton, fed a valid stream mixed with 1,200
hostile messages: every valid event gets its list, every hostile one lands in the dead-letter topic with
its reason and original bytes, no secret shows in the log or the metrics, and clients without the
password or without TLS are refused.

One broker, one Triton and one worker run serve every test here (module fixtures): starting them is most
of the cost.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer
from pydantic import SecretStr

from encoders import TritonEncoder
from streams.app.admin import acreate_topics
from streams.contracts import DeadLetter, Recommendation, vectors_topic_name
from streams.harness import RecommendationCollector, WorkerProcess, produce, run_names, send_raw
from streams.harness.hostile import Hostile, hostile_corpus, valid_catalog, valid_events
from streams.harness.worker_process import settings_env
from streams.local.kafka import KafkaBroker, SaslSsl
from streams.local.triton import TritonServer
from streams.security import KafkaConnection
from streams.settings import Settings
from streams.testing import free_ports
from tests.integration.servers import running_kafka, running_triton
from tests.integration.tls import TestCA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP_USER = "streamrec-app"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def app_password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, app_password: str
) -> Iterator[KafkaBroker]:
    root = tmp_path_factory.mktemp("kafka-secure")
    users = {"broker": secrets.token_urlsafe(16), APP_USER: app_password}
    security = SaslSsl(keystore=ca.issue("broker").keystore(root / "broker.pem"), truststore=ca.cert, users=users)
    yield from running_kafka(root / "home", security)


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[TritonServer]:
    issued = ca.issue("triton")
    yield from running_triton(tmp_path_factory.mktemp("triton-tls"), grpc_tls=(issued.cert, issued.key))


@dataclass
class Run:
    settings: Settings
    kafka: KafkaConnection
    hostile: list[Hostile]
    events: list[str]  #: event ids of the valid events
    lists: list[Recommendation]
    dead: list[DeadLetter]
    log: str
    metrics: str
    worker_alive: bool
    listening: set[str]  #: local addresses the worker's HTTP port listened on, while it ran


async def read_all(kafka: KafkaConnection, topic: str, expected: int, timeout_s: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, **kafka.aiokafka(), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out.extend(r.value for recs in batch.values() for r in recs)
        batch = await consumer.getmany(timeout_ms=1000)  # anything beyond the expected shows up now
        out.extend(r.value for recs in batch.values() for r in recs)
        return out
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def run(
    secure_broker: KafkaBroker, tls_triton: TritonServer, ca: TestCA, app_password: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    tmp = tmp_path_factory.mktemp("secure-run")
    credentials = tmp / "credentials"  # laid out like the Kubernetes Secret mounted at /etc/streamrec/kafka
    credentials.mkdir()
    (credentials / "ca.crt").write_bytes(ca.cert.read_bytes())
    (credentials / "username").write_text(APP_USER + "\n")
    (credentials / "password").write_text(app_password + "\n")
    settings = Settings(
        kafka_bootstrap=secure_broker.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_credentials_dir=credentials,
        **run_names("secure"),
        partitions=2,
        session_timeout_s=6.0,
        encoder="triton",
        triton_url=tls_triton.url,
        triton_ssl=True,
        triton_ssl_root_cert=str(ca.cert),
        k=5,
        web_port=free_ports(1)[0],  # web_host stays the default
        data_dir=tmp / "worker",
        batch_timeout_s=0.005,
        unknown_item_timeout_s=3.0,  # an event for an unknown item waits that long for it
    )
    kafka = KafkaConnection.from_settings(settings)
    p = settings.partitions
    await acreate_topics(
        kafka,
        {t: p for t in (settings.topic_items, vectors_topic_name(settings), settings.topic_events,
                        settings.topic_recommendations, settings.topic_dead_letter)},
        compacted={settings.topic_items, vectors_topic_name(settings)},
    )
    items, events = valid_catalog(), valid_events()
    hostile = hostile_corpus(now=time.time())
    bad_items = [(h.key, h.value) for h in hostile if h.role == "items"]
    bad_events = [(h.key, h.value) for h in hostile if h.role == "events"]
    # the valid events spread evenly through the hostile ones
    stream: list[tuple[bytes | None, bytes | None]] = []
    step = len(bad_events) // len(events) + 1
    for i, event in enumerate(events):
        stream += bad_events[i * step : (i + 1) * step]
        stream.append((event.user_id.encode(), event.model_dump_json().encode()))
    stream += bad_events[len(events) * step :]

    collector = RecommendationCollector(kafka, settings.topic_recommendations)
    await collector.start()
    worker = WorkerProcess(settings, tmp / "worker.log")
    with worker:
        await produce(kafka, settings.topic_items, ((it.item_id, it) for it in items))
        await send_raw(kafka, settings.topic_items, bad_items)
        await asyncio.to_thread(
            worker.wait_until, lambda st: st["catalog_ready"] and st["items"] == len(items), 180, "catalog loaded"
        )
        await send_raw(kafka, settings.topic_events, stream)
        await collector.wait_for(len(events), timeout_s=120)
        dead_raw = await read_all(kafka, settings.topic_dead_letter, len(hostile), timeout_s=120)
        metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{settings.web_port}/metrics")
        alive = worker.proc is not None and worker.proc.poll() is None
        listening = listeners(settings.web_port)
    await collector.stop()
    return Run(
        settings, kafka, hostile, [e.event_id for e in events], [rec for _, rec in collector.received],
        # not decode(): a dead letter carries its original, so it may be larger than the input limit
        [DeadLetter.model_validate_json(raw) for raw in dead_raw],
        worker.log_path.read_text(errors="replace"),
        metrics,
        alive,
        listening,
    )


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _b64(raw: bytes | None) -> str:
    return base64.b64encode(raw or b"").decode()


async def test_every_valid_event_gets_its_list_over_sasl_ssl_and_tls_triton(run: Run) -> None:
    assert run.worker_alive, "the worker stopped"
    assert sorted(r.event_id for r in run.lists) == sorted(run.events), "exactly one list per valid event"
    assert all(len(r.items) == run.settings.k for r in run.lists)
    # the catalog was embedded by Triton over TLS, without a failed request
    count = r'^streamrec_encoder_request_duration_seconds_count\{encoder="triton"\} (\S+)$'
    requests = re.search(count, run.metrics, re.M)
    assert requests and float(requests.group(1)) >= 1
    assert 'streamrec_encoder_errors_total{encoder="triton"} 0.0' in run.metrics


async def test_every_hostile_message_is_dead_lettered_with_its_reason_and_bytes(run: Run) -> None:
    assert len(run.hostile) >= 1000
    topics = {"events": run.settings.topic_events, "items": run.settings.topic_items}
    # each hostile message has a unique key, or (no key / an empty key) a unique value
    by_id = {(d.topic, d.key_b64 or d.original_b64): d for d in run.dead}
    assert len(by_id) == len(run.dead), "a message was dead-lettered twice"
    wrong = []
    for h in run.hostile:
        found = by_id.get((topics[h.role], _b64(h.key) if h.key else _b64(h.value)))
        if found is None or found.reason != h.reason or base64.b64decode(found.original_b64) != (h.value or b""):
            wrong.append((h.kind, h.reason, found and found.reason))
    assert not wrong, f"{len(wrong)} hostile messages not dead-lettered as expected, e.g. {wrong[:5]}"
    assert len(run.dead) == len(run.hostile), "only the hostile messages are dead-lettered"
    counted = Counter(h.reason for h in run.hostile)
    for reason, n in counted.items():
        assert f'streamrec_dead_letters_total{{reason="{reason}"}} {float(n)}' in run.metrics, reason


async def test_no_secret_in_the_environment_log_or_metrics(run: Run, app_password: str) -> None:
    assert app_password not in " ".join(settings_env(run.settings).values())
    assert app_password not in run.log
    assert app_password not in run.metrics
    assert app_password not in repr(run.kafka) and app_password not in str(run.settings)


async def test_the_http_endpoint_listens_on_loopback_only(run: Run) -> None:
    assert run.listening == {"127.0.0.1"}, run.listening


def listeners(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
                found.add(".".join(str(b) for b in words[0]) if width == 8 else b"".join(words).hex())
    return found


async def _refused(kafka: KafkaConnection) -> bool:
    client = AIOKafkaClient(**kafka.aiokafka(), request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10)
    except Exception:
        return True
    finally:
        await client.close()
    return False


async def test_clients_without_the_password_or_tls_are_refused(run: Run, ca: TestCA) -> None:
    good = run.kafka
    assert not await _refused(good)
    assert await _refused(KafkaConnection(good.bootstrap, "SASL_SSL", username=good.username,
                                          password=SecretStr("wrong"), cafile=ca.cert))
    assert await _refused(KafkaConnection(good.bootstrap))  # plaintext
    assert await _refused(KafkaConnection(good.bootstrap, "SASL_PLAINTEXT", username=good.username,
                                          password=good.password))  # the password, but no TLS
    assert await _refused(KafkaConnection(good.bootstrap, "SSL", cafile=ca.cert))  # TLS, but no login
    assert await _refused(KafkaConnection(good.bootstrap, "SASL_SSL", username=good.username,
                                          password=good.password))  # a CA it does not trust


async def test_triton_speaks_tls_only(run: Run, tls_triton: TritonServer, ca: TestCA) -> None:
    async with TritonEncoder(tls_triton.url, ssl=True, root_certificates=str(ca.cert), timeout_s=10) as enc:
        assert await enc.ready()
    async with TritonEncoder(tls_triton.url, timeout_s=3) as plain:
        assert not await plain.ready()
