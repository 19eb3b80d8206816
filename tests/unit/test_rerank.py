"""Rerankers: distinct, bounded, relevance-only at the lambda=1 end, and MMR really diversifies."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.rerank import DPP, MMR, Reranker, TopK
from streams.testing import unit_rows


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(0, 15), lam=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_mmr_returns_min_k_n_distinct_positions(n: int, k: int, lam: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random(n).astype(np.float32)
    picks = MMR(lam).select(rel, unit_rows(rng, n, 8), k)
    assert len(picks) == min(k, n)
    assert len(set(picks.tolist())) == len(picks)
    assert all(0 <= p < n for p in picks)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_mmr_at_lambda_one_is_plain_top_k(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random(n).astype(np.float32)
    emb = unit_rows(rng, n, 8)
    assert MMR(1.0).select(rel, emb, k).tolist() == TopK().select(rel, emb, k).tolist()


def test_mmr_lowers_intra_list_similarity() -> None:
    rng = np.random.default_rng(7)
    # Three tight clusters; the most relevant items all sit in cluster 0.
    centres = unit_rows(rng, 3, 16)
    emb = np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(60, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rel = np.concatenate([0.9 + 0.05 * rng.random(20), 0.6 + 0.05 * rng.random(40)]).astype(np.float32)

    def mean_pairwise_cos(picks: npt.NDArray[np.intp]) -> float:
        e = emb[picks]
        sims = e @ e.T
        return float((sims.sum() - np.trace(sims)) / (len(picks) * (len(picks) - 1)))

    plain = TopK().select(rel, emb, 6)
    diverse = MMR(0.5).select(rel, emb, 6)
    assert {p // 20 for p in plain.tolist()} == {0}
    assert {p // 20 for p in diverse.tolist()} == {0, 1, 2}
    assert mean_pairwise_cos(diverse) < mean_pairwise_cos(plain) - 0.3
    assert diverse[0] == plain[0]  # the first pick is always the most relevant


def test_rerank_maps_positions_to_candidates_and_checks_lengths() -> None:
    emb = np.eye(3, dtype=np.float32)
    rel = np.array([0.1, 0.3, 0.2], dtype=np.float32)
    assert MMR(0.7).rerank(["a", "b", "c"], rel, emb, 2) == ["b", "c"]
    with pytest.raises(ValueError):
        MMR(0.7).rerank(["a", "b"], rel, emb, 2)
    with pytest.raises(ValueError):
        MMR(1.5)


RERANKERS = {"topk": TopK(), "mmr": MMR(0.7), "dpp": DPP(0.7), "dpp0.3": DPP(0.3), "dpp-window3": DPP(0.7, window=3)}


@pytest.mark.parametrize("reranker", RERANKERS.values(), ids=RERANKERS.keys())
def test_select_many_is_select_per_list(reranker: Reranker) -> None:
    """A batch of lists of different lengths, packed left with -inf after each list."""
    rng = np.random.default_rng(1)
    n_lists, width, d, k = 40, 30, 8, 10
    emb = rng.normal(size=(n_lists, width, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    rel = rng.random((n_lists, width)).astype(np.float32)
    counts = rng.integers(0, width + 1, n_lists)
    for b in range(n_lists):
        rel[b, counts[b] :] = -np.inf
    many = reranker.select_many(rel, emb, k)
    for b in range(n_lists):
        one = reranker.select(rel[b, : counts[b]], emb[b, : counts[b]], k)
        assert many[b][many[b] >= 0].tolist() == one.tolist()


@pytest.mark.parametrize("theta", [0.3, 0.7, 0.95])
def test_dpp_on_its_shortlist_picks_what_it_picks_on_the_whole_pool(theta: float) -> None:
    """select_rows reads only the most relevant candidates' vectors where that cannot change a pick, and
    the whole pool elsewhere: the same lists as select_many on every candidate, whichever path a list took."""
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n_lists, width, k = 60, 200, 10
    rows = np.stack([rng.permutation(600)[:width] for _ in range(n_lists)])
    # Relevance spread wide for some lists (the shortlist decides) and narrow for others (it cannot).
    rel = rng.normal(size=(n_lists, width)) * rng.choice([0.05, 1.0, 5.0], size=(n_lists, 1))
    for b, count in enumerate(rng.integers(5, width + 1, n_lists)):
        rel[b, count:] = -np.inf
    whole = DPP(theta, shortlist=0).select_many(rel, vectors[rows], k)
    short = DPP(theta, shortlist=40)
    calls: list[int] = []
    greedy = short._greedy
    short._greedy = lambda r, e, kk: calls.append(len(r)) or greedy(r, e, kk)  # type: ignore[method-assign]
    assert np.array_equal(short.select_rows(rel, vectors, rows, k), whole)
    assert len(calls) == 2 and 0 < calls[1] < n_lists  # some lists were redone on the whole pool, not all
