"""The evaluation's metrics: ranking metrics against ranx, the others against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.evaluate.metrics import (
    METRICS,
    RunMetrics,
    ScoredList,
    calibration_kl,
    explore_share,
    genre_ild,
    genres_covered,
    gini,
    hit_rate,
    ndcg,
    novelty,
    recall,
    reciprocal_rank,
)
from streams.metrics.quality import intra_list_diversity


def fixtures(n_queries: int = 60, seed: int = 7) -> list[tuple[list[str], set[str]]]:
    """Random ranked lists of 10 out of 25 items, each against 1-5 targets (some lists miss them all)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_queries):
        ranked = [f"i{j}" for j in rng.choice(25, 10, replace=False)]
        targets = {f"i{j}" for j in rng.choice(25, int(rng.integers(1, 6)), replace=False)}
        out.append((ranked, targets))
    return out


@pytest.mark.slow  # importing ranx compiles numba code
def test_ranking_metrics_equal_ranx() -> None:
    ranx = pytest.importorskip("ranx")
    cases = fixtures()
    qrels = ranx.Qrels({f"q{n:03d}": dict.fromkeys(t, 1) for n, (_, t) in enumerate(cases)})
    run = ranx.Run(
        {f"q{n:03d}": {i: float(10 - r) for r, i in enumerate(ranked)} for n, (ranked, _) in enumerate(cases)}
    )
    reference = ranx.evaluate(qrels, run, ["hit_rate@10", "ndcg@10", "mrr", "recall@10"])
    ours = {
        "hit_rate@10": np.mean([hit_rate(r, t) for r, t in cases]),
        "ndcg@10": np.mean([ndcg(r, t) for r, t in cases]),
        "mrr": np.mean([reciprocal_rank(r, t) for r, t in cases]),
        "recall@10": np.mean([recall(r, t) for r, t in cases]),
    }
    for name, value in ours.items():
        assert value == pytest.approx(float(reference[name]), abs=1e-9), name
    # and per query (ranx orders queries by id, zero-padded here), so errors cannot compensate in the mean
    per_query = ranx.evaluate(qrels, run, "ndcg@10", return_mean=False)
    assert [ndcg(r, t) for r, t in cases] == pytest.approx(list(per_query), abs=1e-9)
    assert 0 < ours["hit_rate@10"] < 1, "the fixtures hold hits and misses"


def test_ranking_metrics_by_hand() -> None:
    ranked, targets = ["x", "a", "y", "b"], {"a", "b", "c"}
    assert hit_rate(ranked, targets, k=1) == 0.0 and hit_rate(ranked, targets, k=2) == 1.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(ranked, targets) == pytest.approx(dcg / ideal)
    assert reciprocal_rank(ranked, targets) == 0.5
    assert recall(ranked, targets) == pytest.approx(2 / 3)
    assert recall(ranked, targets, k=2) == pytest.approx(1 / 3)


def test_ild_on_embeddings_by_hand() -> None:
    # cosines: e1.e2 = 0, e1.e3 = 0.6, e2.e3 = 0.8 -> mean 1.4 / 3
    vecs = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    assert intra_list_diversity(vecs) == pytest.approx(1 - 1.4 / 3, abs=1e-6)


def test_genre_ild_and_genres_by_hand() -> None:
    lists = [frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"})]
    # Jaccard distances: {a}-{a,b} = 1/2, {a}-{c} = 1, {a,b}-{c} = 1
    assert genre_ild(lists) == pytest.approx(2.5 / 3)
    assert genre_ild([frozenset({"a"})] * 3) == 0.0
    assert genre_ild([frozenset(), frozenset()]) == 0.0 and genre_ild([frozenset(), frozenset({"a"})]) == 1.0
    assert genre_ild([frozenset({"a"})]) is None
    assert genres_covered(lists) == 3


def test_novelty_by_hand() -> None:
    # 10 events so far over a 3-item catalog; counts 7, 2, 0 -> p = 8/13, 3/13, 1/13
    expected = np.mean([-math.log2(8 / 13), -math.log2(3 / 13), -math.log2(1 / 13)])
    assert novelty([7, 2, 0], total=10, n_items=3) == pytest.approx(expected)
    assert novelty([0], total=10, n_items=3)  > novelty([7], total=10, n_items=3)  # type: ignore[operator]


def test_gini_by_hand() -> None:
    # mean absolute difference over ordered pairs / (2 * mean): for 1, 2, 3, 4: 20 / 16 / (2 * 2.5) = 0.25
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)
    assert gini([5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 0, 10]) == pytest.approx(0.8)
    assert gini([0, 0]) == 0.0


def test_calibration_kl_by_hand() -> None:
    # p = (drama 1/2, comedy 1/2); an all-drama list: q = (1, 0), q~ = 0.99 q + 0.01 p = (0.995, 0.005)
    expected = 0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(0.5 / 0.005)
    assert calibration_kl([("drama",), ("drama",)], {"drama": 3, "comedy": 3}) == pytest.approx(expected)
    # a list that splits like the user is calibrated
    assert calibration_kl([("drama", "comedy"), ("comedy",), ("drama",)], {"drama": 1, "comedy": 1}) == pytest.approx(
        0.0, abs=1e-12
    )
    assert calibration_kl([("drama",)], {}) is None


def test_explore_share() -> None:
    assert explore_share(["similar", "explore", "explore", "trending"]) == 0.5
    assert explore_share([]) is None


def scored(items: list[str], targets: list[str], reasons: list[str] | None = None) -> ScoredList:
    return ScoredList(
        user_id="u", event_id="e", ts=0.0, policy="p", items=items, reasons=reasons or ["similar"] * len(items),
        targets=targets, counts=[0.0] * len(items), total=0.0, user_genres={"a": 1.0},
    )


def test_run_metrics_average_lists_and_count_coverage_and_gini_over_the_run() -> None:
    rows = {"i0": 0, "i1": 1, "i2": 2, "i3": 3}
    vectors = np.eye(4, dtype=np.float32)
    genres = [frozenset({"a"}), frozenset({"b"}), frozenset({"a", "b"}), frozenset()]
    run = RunMetrics(rows, vectors, genres, k=2)
    first = run.add(scored(["i0", "i1", "i2"], ["i1"], ["similar", "explore", "similar"]))
    run.add(scored(["i0", "i2"], ["i3"]))
    assert first["hr@10"] == 1.0 and first["mrr"] == 0.5, "k=2 cuts the list to i0, i1"
    summary = run.summary()
    assert set(summary) == set(METRICS)
    assert summary["hr@10"] == 0.5 and summary["mrr"] == 0.25
    assert summary["ild@10"] == pytest.approx(1.0), "orthogonal embeddings"
    assert summary["genre_ild@10"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary["genres@10"] == 2.0
    assert summary["explore_share"] == pytest.approx((0.5 + 0.0) / 2)
    # exposure over the run: i0 twice, i1 once, i2 once, i3 never -> 3 of 4 items, Gini of (0, 1, 1, 2)
    assert summary["coverage"] == 0.75
    assert summary["gini"] == pytest.approx(gini([2, 1, 1, 0]))
    # the user likes only genre a: i0 + i1 -> q = (a 1/2, b 1/2); KL = 1 * ln(1 / (0.99 * 0.5 + 0.01))
    kl_first = math.log(1 / (0.99 * 0.5 + 0.01))
    kl_second = math.log(1 / (0.99 * 0.75 + 0.01))  # i0 + i2: a gets 1/2 + 1/4
    assert summary["calibration_kl"] == pytest.approx((kl_first + kl_second) / 2)


def test_goals_ask_more_of_the_full_replay_than_of_a_sample() -> None:
    from streams.evaluate.report import goals
    from streams.settings import Settings

    row = {"ild@10": 0.5, "genres@10": 10.0, "coverage": 0.5, "calibration_kl": 0.5}
    table = {"covisit": {**row, "ndcg@10": 0.050}, "relevance": {**row, "ndcg@10": 0.055},
             "dpp": {**row, "ndcg@10": 0.054, "ild@10": 0.7, "genres@10": 12.5}, "popular": {**row, "ndcg@10": 0.03}}
    sample, full = goals(table, Settings(policy="dpp")), goals(table, Settings(policy="dpp"), full=True)
    assert sample[0].met and not full[0].met  # +10 %: enough on a sample, not the 1.2 x of the full replay
    assert "`relevance` 0.0550 vs `covisit` 0.0500 (+10.0%)" in full[0].detail
    assert sample[1].met and "`dpp` against `relevance`" in sample[1].detail
