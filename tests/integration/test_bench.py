"""``bench pipeline`` and ``bench encoder`` on tiny sizes against the real broker and Triton: shape, not speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.encoder import bench_encoder
from streams.bench.pipeline import bench_pipeline
from streams.local.kafka import KafkaBroker
from streams.local.triton import TritonServer
from streams.settings import Settings
from streams.testing import free_ports
from tests.unit.test_bench import tiny_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pipeline_every_event_gets_a_list_and_the_ceilings_pass_every_event(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings = Settings(cache_dir=tmp_path, partitions=2, session_timeout_s=6.0, web_port=free_ports(1)[0])
    report = bench_pipeline(
        settings,
        events=150,
        rates=(50.0,),
        duration_s=1.0,
        bootstrap=kafka_broker.bootstrap,
        catalog=tiny_catalog(n_items=200, n_users=20, n_events=400),
        timeout_s=180,
        exactly_once=True,
    )
    tp = report["throughput"]
    assert tp["events"] == tp["with_list"] == 150 and tp["lists"] >= 150
    assert tp["events_per_s"] > 0 and tp["latency_p99_ms"] >= tp["latency_p50_ms"] > 0
    # the worker's memory from /proc: a Python process with numpy and Faust holds tens of MiB at least
    assert tp["worker_peak_rss_mb"] >= tp["worker_rss_mb"] > 20
    for kind in ("aiokafka", "faust"):
        ceiling = report["ceilings"][kind]
        assert ceiling["events"] >= 150 and ceiling["outputs"] == ceiling["events"]
        assert report["ratio"][kind] > 0
    phase = report["latency"]["50"]
    assert phase["events"] == phase["with_list"] == 50 and phase["offered_events_per_s"] == 50
    assert phase["probe"]["events"] == 50 and phase["probe"]["latency_p50_ms"] > 0
    assert report["dead_letters"] == 0
    # the exactly-once worker, side by side: every list counted once it is committed
    eos = report["exactly_once"]["throughput"]
    assert eos["events"] == eos["with_list"] == 150 and report["ratio"]["exactly_once"] > 0
    assert report["exactly_once"]["latency"]["50"]["with_list"] == 50
    assert not (tmp_path / "bench").exists() or not any((tmp_path / "bench").iterdir())


def test_encoder_measures_both_encoders_at_each_batch_size(triton_server: TritonServer) -> None:
    texts = [f"Movie number {i} (19{i % 100:02d})" for i in range(50)]
    report = bench_encoder(texts, Settings(), triton_url=triton_server.url, batches=(1, 4), seconds=0.2)
    assert report["device"].startswith("cpu")
    for name in ("local", "triton"):
        for batch in ("1", "4"):
            r = report["results"][name][batch]
            assert r["requests"] >= 3 and r["texts_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
    assert set(report["overhead"]) == {"1", "4"}
