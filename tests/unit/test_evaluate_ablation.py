"""Pool recall and the ablation: what they count, and that a run reports them apart from the policies."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streams.evaluate import Evaluation, run_evaluation
from streams.evaluate.ablation import FEATURE_GROUPS, MaskedRanker, ablation_names
from streams.evaluate.data import build_catalog
from streams.evaluate.recall import PoolRecall
from streams.evaluate.report import markdown
from streams.evaluate.run import make_system
from streams.ranking.features import FEATURES
from streams.recommender import SOURCES, ListTrace, Recommender
from streams.settings import Settings
from tests.unit.test_evaluate_protocol import rating, small_world, stream


def pool(rows: list[int], sources: list[str]) -> ListTrace:
    tags = np.array([SOURCES.index(s) for s in sources], np.int8)
    return ListTrace("p", "r", Counter(), 0.0, (np.array(rows, np.int64), tags))


def test_pool_recall_counts_positives_found_in_the_users_previous_pool_by_source() -> None:
    recall = PoolRecall({f"m{i}": i for i in range(10)}.get)
    events = [
        rating(0, "a", "m1", 5.0),  # a's first event: no pool before it, not counted
        rating(1, "a", "m2", 5.0),  # in a's pool, from co-visitation
        rating(2, "b", "m2", 4.0),  # b's first
        rating(3, "a", "m3", 2.0),  # not positive
        rating(4, "b", "m8", 4.5),  # b's pool (m9) lacks it: a miss
        rating(5, "a", "m3", 4.0),  # in a's latest pool (the one after event 3), from trending
        rating(6, "a", "zz", 4.0),  # unknown to the catalog: a miss
    ]
    traces = [pool([2, 3], ["co-visited", "trending"]), pool([5], ["similar"]), pool([9], ["fresh"]),
              pool([4, 3], ["similar", "trending"]), pool([1], ["similar"]), pool([1], ["similar"]),
              pool([1], ["similar"])]
    recall.feed(events[:3], traces[:3])
    recall.feed(events[3:], traces[3:])  # a user's pool carries across batches
    assert recall.positives == 4
    summary = recall.summary()
    assert summary["co-visited"] == summary["trending"] == 0.25 and summary["similar"] == summary["fresh"] == 0.0
    assert summary["total"] == 0.5


def test_pool_recall_ignores_a_system_without_traces() -> None:
    recall = PoolRecall({"m1": 1}.get)
    recall.feed([rating(0, "a", "m1", 5.0), rating(1, "a", "m1", 5.0)], [])
    assert recall.positives == 0 and recall.summary()["total"] == 0.0


def test_a_masked_ranker_ignores_its_dropped_features_when_scoring_and_learning() -> None:
    ranker = MaskedRanker(FEATURE_GROUPS["content"])
    rng = np.random.default_rng(0)
    X = rng.random((6, 5, len(FEATURES))).astype(np.float32)
    before = dict(ranker.weights)
    ranker.learn_many(X, np.ones((6, 5), bool), np.zeros(6, np.intp))
    changed = X.copy()
    changed[..., [FEATURES.index(f) for f in FEATURE_GROUPS["content"]]] += 10.0
    assert np.array_equal(ranker.score(X), ranker.score(changed))
    assert all(ranker.weights[f] == before[f] for f in FEATURE_GROUPS["content"])
    assert ranker.weights["covisit_share"] != before["covisit_share"], "the others still learn"


def test_an_ablated_source_offers_no_candidates_and_finds_no_positives() -> None:
    items, vectors = small_world()
    events = stream(items, n=240)
    ev = Evaluation("small", items, events, Settings(k=5, batch_size=20), vectors)
    name = "relevance without source trending"
    system = make_system(name, ev.settings, build_catalog(items, vectors, ev.settings))
    assert isinstance(system, Recommender) and system.mix.trending == 0
    result, _ = run_evaluation(ev, ["popular", "relevance", name])
    assert set(result["policies"]) == {"popular", "relevance"} and set(result["ablation"]) == {name}
    assert set(result["pool_recall"]) == {"relevance", name}, "the baselines have no pool"
    full, ablated = result["pool_recall"]["relevance"], result["pool_recall"][name]
    assert full["trending"] > 0 and ablated["trending"] == 0
    assert full["total"] == pytest.approx(sum(full[s] for s in SOURCES)) and full["total"] > 0
    text = markdown(result, {}, ev.settings, "# run")
    assert f"| {full['total']:.4f} |" in text and "| source trending |" in text


def test_ablation_names_are_one_per_source_and_feature_group() -> None:
    names = ablation_names()
    assert len(names) == len(SOURCES) + len(FEATURE_GROUPS) == len(set(names))
    assert set().union(*FEATURE_GROUPS.values()) == set(FEATURES), "every feature is in one group"
    with pytest.raises(ValueError, match="unknown ablation"):
        make_system("relevance without source nowhere", Settings(), build_catalog(*small_world(), Settings()))
