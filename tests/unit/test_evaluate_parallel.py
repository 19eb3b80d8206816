"""``--jobs``: the systems replayed in worker processes score exactly what they score one after another."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.evaluate import Evaluation, run_evaluation
from streams.evaluate.ablation import ablation_names
from streams.settings import Settings
from tests.unit.test_evaluate_protocol import small_world, stream

#: A baseline, a plain and a reranked policy, a sweep point and an ablation: each kind of system.
NAMES = ["popular", "relevance", "dpp_explore", "mmr@0.5", ablation_names()[0], "covisit"]


def evaluation() -> Evaluation:
    items, vectors = small_world()
    return Evaluation("small", items, stream(items, n=240), Settings(k=5, batch_size=20), vectors)


def test_parallel_jobs_write_the_metrics_and_lists_of_one_process(tmp_path: Path) -> None:
    alone, alone_seconds = run_evaluation(evaluation(), NAMES, dump_path=tmp_path / "alone.jsonl")
    side_by_side, seconds = run_evaluation(evaluation(), NAMES, dump_path=tmp_path / "jobs.jsonl", jobs=2)
    assert side_by_side == alone, "every number of metrics.json, pool recall and ablation included"
    assert list(side_by_side["policies"]) == NAMES[:4] + NAMES[5:], "report order, not completion order"
    assert side_by_side["pool_recall"] and side_by_side["ablation"]
    assert list(seconds) == list(alone_seconds) == NAMES
    dumped = (tmp_path / "jobs.jsonl").read_text()
    assert dumped == (tmp_path / "alone.jsonl").read_text() and dumped.count("\n") > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.jsonl", "jobs.jsonl"], "no part files left behind"


def test_a_system_failing_in_a_worker_fails_the_run() -> None:
    with pytest.raises(ValueError, match="unknown ablation"):
        run_evaluation(evaluation(), ["popular", "relevance without source nowhere"], jobs=2)
