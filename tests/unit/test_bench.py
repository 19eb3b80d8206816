"""``streamrec bench``: the JSON each part writes has the right shape and sane values (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from streams.bench import merge_section
from streams.bench.catalog import EmbeddedCatalog
from streams.bench.memory import bench_memory
from streams.cli import app
from streams.contracts import Event, EventType, Item
from streams.demo.movielens import MovieLens
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
