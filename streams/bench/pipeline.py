"""End to end through local Kafka: one worker's throughput and latency, against two pass-through ceilings.

One run: a broker (a throw-away one on free ports unless ``bootstrap`` names one), fresh topics, the
MovieLens catalog written already embedded into ``<items>-vectors`` (the bench measures serving,
not embedding; the vectors are cached, see :mod:`streams.bench.catalog`), one worker process with
the configured policy (default ``dpp_explore``), then:

1. **throughput**: ``events`` ratings produced as fast as the producer goes; events/s from the
   first one produced to the last list consumed;
2. **ceilings** on those same events (still the only ones in the topic): the aiokafka and the
   tuned Faust pass-throughs of :mod:`streams.bench.passthrough`, each in its own process, new
   consumer group and output topic, clocked from their first event consumed (start-up excluded);
3. **latency** at each offered load of ``rates`` for ``duration_s``: per event, from the moment it
   was handed to the producer (linger 0) to the moment the collector got its list; every phase
   waits until each of its events has a list, so a saturated phase does not spill into the next.
   Beside each, a **probe** with no worker: lists produced straight into a topic the same kind of
   collector reads, at the same rate: what producer, broker and collector add on their own.

Worker CPU seconds per event come from ``/proc`` (Linux), so the figures can be judged on a
shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app import faust_internals
from streams.bench import percentiles_ms, rss_bytes
from streams.bench.catalog import EmbeddedCatalog, embedded_movielens
from streams.contracts import EmbeddedItem, Event, Recommendation, b64_vector, vectors_topic_name
from streams.harness import RecommendationCollector, WorkerProcess, create_app_topics, produce, run_names
from streams.local import _process
from streams.local.kafka import KafkaBroker, ensure_jars, free_port
from streams.process import gc_thresholds
from streams.settings import Settings

log = logging.getLogger(__name__)

#: The collector's longest fetch wait: small, so an empty fetch in flight never delays a list much.
COLLECTOR_FETCH_WAIT_MS = 5
PROBE_SECONDS = 5.0


@contextlib.contextmanager
def _broker(cache_dir: Path, bootstrap: str | None) -> Iterator[str]:
    """``bootstrap`` as given, or a fresh broker in a temporary home on free ports (stopped after)."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-kafka-") as home:
        broker = KafkaBroker(Path(home), ensure_jars(cache_dir), port=free_port(), controller_port=free_port())
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _events(catalog: EmbeddedCatalog, start: int, count: int) -> list[Event]:
    """``count`` ratings from position ``start``, cycling through MovieLens with fresh event ids if needed."""
    events = catalog.data.events
    out = []
    for i in range(start, start + count):
        event = events[i % len(events)]
        lap = i // len(events)
        out.append(event if lap == 0 else event.model_copy(update={"event_id": f"{event.event_id}~{lap}"}))
    return out


class _Arrivals:
    """First arrival time per event id, read incrementally from a collector."""

    def __init__(self, collector: RecommendationCollector) -> None:
        self.collector = collector
        self.first: dict[str, float] = {}
        self.lists = 0
        self._read = 0

    def update(self) -> None:
        received = self.collector.received
        for t, rec in received[self._read :]:
            self.first.setdefault(rec.event_id, t)
        self.lists, self._read = len(received), len(received)

    async def wait(self, ids: Sequence[str], timeout_s: float, worker: WorkerProcess | None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.update()
            missing = sum(1 for i in ids if i not in self.first)
            if not missing:
                return
            if worker is not None and worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"worker died:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{missing} of {len(ids)} events without a list after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


async def _phase(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[str, Event | Recommendation]],
    arrivals: _Arrivals,
    rate: float,
    timeout_s: float,
    worker: WorkerProcess | None,
) -> dict[str, Any]:
    """Produce ``messages`` at ``rate`` (0: flat out) and wait until each event id has arrived."""
    sent: list[float] = [0.0] * len(messages)
    lists_before = arrivals.lists
    cpu_before = _cpu_s(worker.proc.pid) if worker is not None and worker.proc is not None else None

    def on_sent(i: int, t: float) -> None:
        sent[i] = t

    linger = 5 if rate <= 0 else 0  # flat out: batch like a busy producer; paced: send at once
    await produce(bootstrap, topic, messages, on_sent, rate, linger_ms=linger)
    ids = [m.event_id for _, m in messages]
    await arrivals.wait(ids, timeout_s, worker)
    got = np.array([arrivals.first[i] for i in ids])
    latency = got - np.array(sent)
    elapsed = float(got.max() - min(sent))
    result: dict[str, Any] = {
        "events": len(messages),
        "lists": arrivals.lists - lists_before,
        "with_list": len(ids),
        "elapsed_s": elapsed,
        "events_per_s": len(messages) / elapsed,
        "produce_s": max(sent) - min(sent),
        **{f"latency_{k}": v for k, v in percentiles_ms(latency).items()},
    }
    if cpu_before is not None and worker is not None and worker.proc is not None:
        cpu_after = _cpu_s(worker.proc.pid)
        if cpu_after is not None:
            result["worker_cpu_ms_per_event"] = 1e3 * (cpu_after - cpu_before) / len(messages)
        result.update(_worker_memory(worker.proc.pid))
    return result


def _worker_memory(pid: int) -> dict[str, float]:
    """The worker's resident memory at the end of a phase and its peak so far, in MiB (none without /proc)."""
    try:
        return {"worker_rss_mb": rss_bytes("VmRSS", pid) / 2**20, "worker_peak_rss_mb": rss_bytes("VmHWM", pid) / 2**20}
    except (OSError, RuntimeError):
        return {}


async def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            await faust_internals.force_metadata_update(consumer)
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return int(sum((await consumer.end_offsets(parts)).values()))
    finally:
        await consumer.stop()


def _spawn_passthrough(
    kind: str, bootstrap: str, source: str, sink: str, count: int, result: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "streams.bench.passthrough",
        kind,
        "--bootstrap",
        bootstrap,
        "--source",
        source,
        "--sink",
        sink,
        "--group",
        f"{sink}-group",
        "--count",
        str(count),
        "--result",
        str(result),
    ]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)


async def _ceiling(kind: str, bootstrap: str, source: str, sink: str, count: int, workdir: Path) -> dict[str, Any]:
    """Run one pass-through process over ``source`` until it reports ``count`` events done."""
    result = workdir / f"{kind}.json"
    log_path = workdir / f"{kind}.log"
    proc = _spawn_passthrough(kind, bootstrap, source, sink, count, result, log_path)
    try:
        deadline = time.monotonic() + 300
        while not result.exists():
            if proc.poll() is not None and not result.exists():
                tail = _process.tail(log_path, 30, "")
                raise RuntimeError(f"{kind} pass-through exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} pass-through not done in 300 s:\n{_process.tail(log_path, 30, '')}")
            await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            _process.terminate(proc.pid, 30, proc=proc)
    report: dict[str, Any] = json.loads(result.read_text())
    report["outputs"] = await _end_offsets(bootstrap, sink)
    report["cpu_ms_per_event"] = 1e3 * report.pop("cpu_s") / report["events"]
    return report


async def _run(
    settings: Settings,
    catalog: EmbeddedCatalog,
    events: int,
    rates: Sequence[float],
    duration_s: float,
    timeout_s: float,
    ceilings: bool,
    workdir: Path,
) -> dict[str, Any]:
    bootstrap = settings.kafka_bootstrap
    prefix = settings.topic_items.removesuffix("-items")
    sinks = {kind: f"{prefix}-out-{kind}" for kind in ("aiokafka", "faust")}
    probe_topic = f"{prefix}-probe"
    await create_app_topics(settings, probe_topic, *sinks.values())
    embedded = [
        EmbeddedItem(item=item, vector_b64=b64_vector(vec))
        for item, vec in zip(catalog.data.items, catalog.vectors, strict=True)
    ]
    await produce(bootstrap, vectors_topic_name(settings), ((e.item.item_id, e) for e in embedded))
    worker = WorkerProcess(settings, workdir / "worker.log")
    # Under exactly-once a list counts when its transaction committed: the collector reads committed data.
    collector = RecommendationCollector(
        bootstrap, settings.topic_recommendations, COLLECTOR_FETCH_WAIT_MS, isolation_level=settings.isolation_level
    )
    probe = RecommendationCollector(bootstrap, probe_topic, COLLECTOR_FETCH_WAIT_MS)
    await collector.start()
    await probe.start()
    worker.start()
    report: dict[str, Any] = {}
    try:
        started = time.monotonic()
        n_items = len(catalog.data.items)
        await asyncio.to_thread(
            worker.wait_until, lambda s: s["catalog_ready"] and s["items"] >= n_items, timeout_s, "catalog ready"
        )
        report["worker_start_s"] = time.monotonic() - started
        arrivals = _Arrivals(collector)
        batch = _events(catalog, 0, events)
        report["throughput"] = await _phase(
            bootstrap, settings.topic_events, [(e.user_id, e) for e in batch], arrivals, 0.0, timeout_s, worker
        )
        if ceilings:
            report["ceilings"] = {
                kind: await _ceiling(kind, bootstrap, settings.topic_events, sink, events, workdir)
                for kind, sink in sinks.items()
            }
            ours = report["throughput"]["events_per_s"]
            report["ratio"] = {kind: ours / c["events_per_s"] for kind, c in report["ceilings"].items()}
        report["latency"] = await _latency(
            settings, catalog, events, rates, duration_s, timeout_s, worker, arrivals, probe, probe_topic
        )
        report["dead_letters"] = await _end_offsets(bootstrap, settings.topic_dead_letter)
    finally:
        await collector.stop()
        await probe.stop()
        worker.stop()
    return report


async def _latency(
    settings: Settings, catalog: EmbeddedCatalog, position: int, rates: Sequence[float], duration_s: float,
    timeout_s: float, worker: WorkerProcess, arrivals: _Arrivals, probe: RecommendationCollector, probe_topic: str,
) -> dict[str, Any]:
    """The latency phases at each offered rate, events from ``position`` on, each beside its probe."""
    bootstrap = settings.kafka_bootstrap
    latency: dict[str, Any] = {}
    probe_arrivals = _Arrivals(probe)
    for rate in rates:
        count = max(1, int(rate * duration_s))
        batch = _events(catalog, position, count)
        position += count
        try:
            phase = await _phase(
                bootstrap, settings.topic_events, [(e.user_id, e) for e in batch], arrivals, rate, timeout_s, worker
            )
        except TimeoutError as exc:  # a worker far below the offered load: keep what was measured so far
            latency[f"{rate:g}"] = {"offered_events_per_s": rate, "timed_out": str(exc)}
            break
        # the probe: empty lists straight to a topic, same rate, same kind of collector, no worker
        n_probe = max(1, int(rate * min(duration_s, PROBE_SECONDS)))
        probes = [
            (
                e.user_id,
                Recommendation(
                    user_id=e.user_id, event_id=f"probe-{rate:g}-{i}", generated_at=0, policy="probe", items=[]
                ),
            )
            for i, e in enumerate(batch[:n_probe])
        ]
        floor = await _phase(bootstrap, probe_topic, probes, probe_arrivals, rate, timeout_s, None)
        phase["probe"] = {k: floor[k] for k in ("events", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms")}
        latency[f"{rate:g}"] = {"offered_events_per_s": rate, **phase}
    return latency


def bench_pipeline(
    settings: Settings,
    *,
    events: int = 10_000,
    rates: Sequence[float] = (500.0, 1000.0, 2000.0),
    duration_s: float = 10.0,
    bootstrap: str | None = None,
    timeout_s: float = 600.0,
    ceilings: bool = True,
    exactly_once: bool = False,
    catalog: EmbeddedCatalog | None = None,
) -> dict[str, Any]:
    """The whole pipeline part; see the module docstring. ``settings`` configure the worker (policy, K...).

    With ``exactly_once``, a second worker with ``processing_guarantee="exactly_once"`` then runs the
    same phases on fresh topics of the same broker (no ceilings), so the cost of the transactions is
    measured side by side (``report["exactly_once"]``, ``report["ratio"]["exactly_once"]``).
    ``catalog`` defaults to the embedded MovieLens one (tests pass random vectors to skip embedding).
    """
    # A consumer that starts right after its topic was created gets one retried NotLeaderForPartition.
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    catalog = catalog or embedded_movielens(settings.cache_dir)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    workdir = settings.cache_dir / "bench" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        # The load generator and collector, in this process, pause for no full collection (see gc_thresholds).
        with _broker(settings.cache_dir, bootstrap) as boot, gc_thresholds(settings.gc_thresholds):
            worker_settings = settings.model_copy(
                update={
                    "kafka_bootstrap": boot,
                    **run_names("bench", run_id),
                    "encoder": "local",  # never called: the items arrive embedded
                    "web_port": free_port(),
                    "data_dir": workdir / "worker",
                }
            )
            report = asyncio.run(
                _run(worker_settings, catalog, events, rates, duration_s, timeout_s, ceilings, workdir)
            )
            if exactly_once:
                eos_dir = workdir / "exactly-once"
                eos_dir.mkdir()
                eos_settings = worker_settings.model_copy(
                    update={
                        **run_names("bench", f"{run_id}-eos"),
                        "processing_guarantee": "exactly_once",
                        "web_port": free_port(),
                        "data_dir": eos_dir / "worker",
                    }
                )
                eos = asyncio.run(_run(eos_settings, catalog, events, rates, duration_s, timeout_s, False, eos_dir))
                report["exactly_once"] = {key: eos[key] for key in ("worker_start_s", "throughput", "latency")}
                ratio = eos["throughput"]["events_per_s"] / report["throughput"]["events_per_s"]
                report.setdefault("ratio", {})["exactly_once"] = ratio
    except BaseException:
        log.error("pipeline bench failed; logs kept in %s", workdir)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "broker": bootstrap or "fresh local broker",
        "partitions": settings.partitions,
        "policy": settings.policy,
        "processing_guarantee": settings.processing_guarantee,
        "k": settings.k,
        "batch_size": settings.batch_size,
        "items": len(catalog.data.items),
        "collector_fetch_max_wait_ms": COLLECTOR_FETCH_WAIT_MS,
        **report,
    }
