"""``streamrec bench``: the JSON each part writes has the right shape and sane values (never timings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from streams.bench import core as core_bench
from streams.bench import merge_section
from streams.bench.catalog import EmbeddedCatalog
from streams.bench.core import bench_core, build_catalog, synthetic_workload
from streams.bench.memory import bench_memory
from streams.bench.snapshot import LOAD, OTHER_ROWS, PUBLISH, fill_models
from streams.build import build_shared_models
from streams.cli import app
from streams.contracts import Event, EventType, Item
from streams.demo.movielens import MovieLens
from streams.explore import ThompsonSampling
from streams.settings import Settings


def tiny_catalog(n_items: int = 30, n_users: int = 5, n_events: int = 120, seed: int = 0) -> EmbeddedCatalog:
    rng = np.random.default_rng(seed)
    items = [Item(item_id=str(i), title=f"movie {i}", categories=[f"g{i % 4}"], created_at=0.0) for i in range(n_items)]
    vectors = rng.normal(size=(n_items, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    events = [
        Event(
            event_id=f"e{n}",
            user_id=f"u{n % n_users}",
            item_id=str(rng.integers(n_items)),
            type=EventType.RATING,
            value=float(rng.integers(1, 6)),
            ts=float(n),
        )
        for n in range(n_events)
    ]
    return EmbeddedCatalog(MovieLens(items=items, events=events), vectors)


def test_merge_section_keeps_other_parts_and_names_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    merge_section(out, "a", {"x": 1})
    merge_section(out, "b", {"y": 2})
    merge_section(out, "a", {"x": 3})
    data = json.loads(out.read_text())
    assert data["a"]["x"] == 3 and data["b"]["y"] == 2
    for part in ("a", "b"):
        assert {"date", "commit", "cores", "processor"} <= data[part]["environment"].keys()


def test_memory_reports_state_bytes_and_rss() -> None:
    catalog = tiny_catalog()
    report = bench_memory(catalog, Settings(), users=2000)
    assert report["state_bytes"]["users"] == 5
    assert 0 < report["state_bytes"]["p50"] <= report["state_bytes"]["max"]
    assert report["state_bytes_after_n_events"]["1"]["users"] == 5
    rss = report["rss"]
    assert rss["users"] == 2000 and rss["payload_bytes"] > 2000 * report["state_bytes"]["p50"] / 2
    assert rss["rss_growth_bytes"] >= 0 and rss["mib_per_100k_users"] >= 0


def test_cli_rerank_merges_into_the_json_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"memory": {"kept": True}}))
    args = ["bench", "rerank", "--n", "40", "--k", "5", "--d", "16", "--repeats", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "naive_dpp" in result.output
    data = json.loads(out.read_text())
    assert data["memory"] == {"kept": True}
    assert data["rerank"]["k"] == 5 and set(data["rerank"]["results"]) >= {"dpp", "naive_dpp", "mmr"}


def test_cli_wire_reports_decoding_encoding_and_the_handler_per_event(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "wire", "--items", "50", "--events", "40", "--batch", "10", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    wire = json.loads(out.read_text())["wire"]
    assert wire["items"] == 50 and wire["handler"]["events"] == 40
    assert set(wire["decode_us"]) == {"event_strict", "event", "embedded_item_strict", "embedded_item"}
    assert all(v > 0 for v in [*wire["decode_us"].values(), wire["encode_us"]["list"]])
    steps = [wire["handler"][f"{step}_ms_per_event"] for step in ("take", "answer", "published")]
    assert all(v >= 0 for v in steps) and wire["handler"]["total_ms_per_event"] == pytest.approx(sum(steps))


def _positive_timings(r: dict[str, float]) -> None:
    assert r["events"] > 0
    for key in ("cpu_ms_per_event", "wall_ms_per_event", "events_per_s", "batch_wall_ms_p50"):
        assert r[key] > 0, key


def test_core_times_each_batch_size_on_the_same_events_and_profiles() -> None:
    workload = synthetic_workload(200, 500, users=20, dim=32)
    report = bench_core(workload, Settings(), warmup=300, events=200, batches=[1, 10, 100], top=8)
    assert report["workload"]["items"] == 200 and report["workload"]["timed_events"] == 200
    assert set(report["batches"]) == {"1", "10", "100"}
    for size, r in report["batches"].items():
        assert r["batch_size"] == int(size) and r["events"] == 200
        _positive_timings(r)
    for key in ("profile", "profile_cumulative"):
        rows = report[key]
        assert 0 < len(rows) <= 8
        assert {"function", "where", "calls_per_event", "tottime_ms_per_event", "cumtime_ms_per_event"} <= rows[
            0
        ].keys()
    assert any(r["function"] == "process" for r in report["profile_cumulative"])
    assert report["target"]["measured"] == report["batches"]["100"]["cpu_ms_per_event"]


def test_core_refuses_more_events_than_the_workload_has() -> None:
    with pytest.raises(ValueError, match="events"):
        bench_core(synthetic_workload(50, 100, users=5, dim=8), Settings(), warmup=80, events=40)


def invoke_bench(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, part: str, workload: Any, args: list[str]
) -> tuple[str, dict[str, Any]]:
    """``streamrec bench <part> --out X args`` with ``workload`` standing in for MovieLens, into a
    bench.json that holds another part already (kept): its output and the JSON."""
    monkeypatch.setattr(core_bench, "movielens_workload", lambda settings: workload)
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"other": {"kept": True}}))
    result = CliRunner().invoke(app, ["bench", part, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["other"] == {"kept": True}
    return result.output, data


def test_cli_core_merges_batches_profile_and_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI on a tiny stand-in for MovieLens, and one scale run in its own process."""
    args = ["--warmup", "150", "--events", "100", "--batches", "1,100"]
    args += ["--items", "300", "--indexes", "exact", "--scale-warmup", "100", "--scale-events", "100"]
    output, data = invoke_bench(monkeypatch, tmp_path, "core", synthetic_workload(150, 300, users=10, dim=16), args)
    assert "core profile" in output
    core = data["core"]
    assert {"commit", "date", "cores"} <= core["environment"].keys()
    assert set(core["batches"]) == {"1", "100"} and core["profile"]
    scaled = core["scale"]["300"]["exact"]
    _positive_timings(scaled)
    assert scaled["items"] == 300 and scaled["rss_mb"] > 0 and scaled["vectors_mb"] > 0


def test_cli_bench_out_before_the_part_is_where_it_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a stray default bench.json would land here
    out = tmp_path / "chosen.json"
    args = ["bench", "--out", str(out), "rerank", "--n", "40", "--k", "5", "--d", "16", "--repeats", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["rerank"]["k"] == 5
    assert not (tmp_path / "bench.json").exists()


def test_fill_models_makes_every_row_as_big_as_a_long_stream_would() -> None:
    workload = synthetic_workload(300, 0, dim=8)
    models = build_shared_models(Settings(), build_catalog(workload, Settings()))
    fill_models(models, users=40, arms=30)
    assert all(models.covisit.n_neighbours(row) == models.covisit.max_neighbours for row in range(300))
    assert len(models.mf) == 300 and len(models.mf.state(300)["users"]) == 40
    assert (models.catalog.popularity() > 0).all()
    bandit = models.bandit
    assert isinstance(bandit, ThompsonSampling)
    prior = bandit.alpha0 + bandit.beta0
    assert sum(sum(bandit.posterior(str(i))) > prior for i in range(300)) == 30  # arms learned: the first 30


def test_cli_snapshot_measures_publish_load_and_serving_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI on a tiny stand-in for MovieLens, and one scale run in its own process (several chunks)."""
    args = ["--warmup", "300", "--events", "200", "--repeats", "2"]
    args += ["--rounds", "2", "--items", "2000", "--scale-users", "50", "--scale-repeats", "1"]
    workload = synthetic_workload(150, 500, users=10, dim=16)
    output, data = invoke_bench(monkeypatch, tmp_path, "snapshot", workload, args)
    assert "serving cost" in output and "byte-equal" in output
    section = data["snapshot"]
    assert {"commit", "date", "cores"} <= section["environment"].keys()
    for snap, repeats in [(section["snapshot"], 2), (section["scale"]["2000"], 1)]:
        assert snap["byte_equal"] is True
        assert snap["chunks"] == -(-snap["payload_bytes"] // snap["max_chunk_bytes"])
        assert sum(snap["array_bytes"].values()) <= snap["payload_bytes"]
        assert set(snap["median_ms"]) == {*PUBLISH, *LOAD, *OTHER_ROWS}
        assert all(len(runs) == repeats and min(runs) > 0 for runs in snap["runs_ms"].values())
        assert snap["publish_ms"] == pytest.approx(sum(snap["median_ms"][s] for s in PUBLISH))
        assert snap["broker_mb_per_s"] == pytest.approx(snap["payload_bytes"] / 1e6 / snap["snapshot_interval_s"])
    scaled = section["scale"]["2000"]
    assert scaled["items"] == 2000 and scaled["mf_users"] == 50 and scaled["chunks"] > 1
    keep = scaled["max_neighbours"]
    assert scaled["array_bytes"]["covisit"] == 2000 * keep * (4 + 8) + 2000 * 8  # every row's neighbours, its fill
    serving = section["serving"]
    assert len(serving["cpu_ms_per_event"]["both"]) == len(serving["cpu_ms_per_event"]["serve"]) == 2
    assert serving["both_cpu_ms_per_event"] > 0 and serving["serve_cpu_ms_per_event"] > 0
    assert serving["lessons_records"] > 0 and serving["lessons_bytes_per_event"] > 0
    assert len(serving["cpu_ms_per_event"]["follow"]) == 2 and serving["follow_cpu_ms_per_event"] > 0
