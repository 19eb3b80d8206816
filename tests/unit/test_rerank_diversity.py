"""DPP and calibrated reranking: valid lists, top-k at the relevance end, the fast DPP equals brute force,
and each does what it is for (DPP diversifies, calibration matches the user's category mix)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.bench.rerank import bench_rerank
from streams.rerank import DPP, MMR, Calibrated
from streams.rerank.calibration import miscalibration
from streams.rerank.naive import naive_dpp_greedy, naive_mmr
from streams.rerank.relevance import top_k
from streams.testing import unit_rows

FloatArray = npt.NDArray[np.float32]
GENRES = ["action", "comedy", "drama", "horror", "romance"]


def random_request(
    rng: np.random.Generator, n: int, *, single: bool
) -> tuple[FloatArray, list[tuple[str, ...]], dict[str, float]]:
    """Relevance, per-item genres (one each, or 0-3 including one the user never watches) and a user profile."""
    rel = rng.random(n).astype(np.float32)
    cats: list[tuple[str, ...]]
    if single:
        cats = [(GENRES[int(rng.integers(len(GENRES)))],) for _ in range(n)]
    else:
        pool = [*GENRES, "documentary"]
        cats = [tuple(rng.choice(pool, size=int(rng.integers(0, 4)), replace=False).tolist()) for _ in range(n)]
    weights = rng.dirichlet(np.full(len(GENRES), 0.5)) * (rng.random(len(GENRES)) < 0.8)
    return rel, cats, dict(zip(GENRES, weights.tolist(), strict=True))


def assert_valid(picks: npt.NDArray[np.intp], n: int, k: int) -> None:
    assert picks.dtype == np.intp
    assert len(picks) == max(0, min(k, n))
    assert len(set(picks.tolist())) == len(picks)
    assert all(0 <= p < n for p in picks.tolist())


def clustered(rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Three tight clusters of 20; the 20 most relevant items all sit in cluster 0."""
    centres = unit_rows(rng, 3, 16)
    emb = np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(60, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rel = np.concatenate([0.9 + 0.05 * rng.random(20), 0.6 + 0.05 * rng.random(40)]).astype(np.float32)
    return rel, emb


def mean_pairwise_cos(emb: FloatArray, picks: npt.NDArray[np.intp]) -> float:
    e = emb[picks]
    sims = e @ e.T
    return float((sims.sum() - np.trace(sims)) / (len(picks) * (len(picks) - 1)))


# --- DPP ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    k=st.integers(0, 15),
    d=st.integers(2, 16),
    theta=st.floats(0, 1),
    window=st.none() | st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_dpp_returns_min_k_n_distinct_positions(
    n: int, k: int, d: int, theta: float, window: int | None, seed: int
) -> None:
    # d < k is included: the kernel's rank runs out, the gains hit eps and the rest is filled by relevance.
    rng = np.random.default_rng(seed)
    assert_valid(DPP(theta, window=window).select(rng.random(n).astype(np.float32), unit_rows(rng, n, d), k), n, k)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 15), window=st.none() | st.integers(2, 6), seed=st.integers(0, 2**16))
def test_dpp_at_theta_one_is_plain_top_k(n: int, k: int, window: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random(n).astype(np.float32)
    assert DPP(1.0, window=window).select(rel, unit_rows(rng, n, 8), k).tolist() == top_k(rel, k).tolist()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 30), d=st.integers(2, 8), theta=st.floats(0.1, 0.9), seed=st.integers(0, 2**16), data=st.data())
def test_fast_dpp_selects_what_brute_force_selects(
    n: int, d: int, theta: float, seed: int, data: st.DataObject
) -> None:
    # k <= d keeps every L_S non-singular; continuous random inputs make exact ties (measure zero) not occur.
    k = data.draw(st.integers(1, d))
    rng = np.random.default_rng(seed)
    rel, emb = rng.random(n).astype(np.float32), unit_rows(rng, n, d)
    assert DPP(theta, eps=1e-9).select(rel, emb, k).tolist() == naive_dpp_greedy(rel, emb, k, theta, eps=1e-9).tolist()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    d=st.integers(2, 8),
    k=st.integers(1, 14),
    window=st.integers(2, 5),
    theta=st.floats(0.1, 0.9),
    seed=st.integers(0, 2**16),
)
def test_windowed_dpp_selects_what_brute_force_selects(
    n: int, d: int, k: int, window: int, theta: float, seed: int
) -> None:
    # Only the last window-1 picks condition the next one, so lists may run well past d.
    rng = np.random.default_rng(seed)
    rel, emb = rng.random(n).astype(np.float32), unit_rows(rng, n, max(d, window))
    fast = DPP(theta, window=window).select(rel, emb, k)
    assert_valid(fast, n, k)
    assert fast.tolist() == naive_dpp_greedy(rel, emb, k, theta, window=window).tolist()


def test_dpp_window_forgets_items_that_left_it() -> None:
    # Items 0 and 1 are duplicates. With window=2 only the previous pick counts, so 1 may follow 2.
    e = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    rel = np.array([1.0, 0.99, 0.5, 0.1], dtype=np.float32)
    assert DPP(0.8).select(rel, e, 4).tolist() == [0, 2, 3, 1]
    assert DPP(0.8, window=2).select(rel, e, 4).tolist() == [0, 2, 1, 3]


def test_dpp_lowers_intra_list_similarity() -> None:
    rel, emb = clustered(np.random.default_rng(7))
    plain = top_k(rel, 6)
    diverse = DPP(0.5).select(rel, emb, 6)
    assert {p // 20 for p in plain.tolist()} == {0}
    assert {p // 20 for p in diverse.tolist()} == {0, 1, 2}
    assert mean_pairwise_cos(emb, diverse) < mean_pairwise_cos(emb, plain) - 0.3
    assert diverse[0] == plain[0]  # the first pick is the most relevant (largest L_ii)
    windowed = DPP(0.5, window=3).select(rel, emb, 6)
    assert all(len({p // 20 for p in windowed[i : i + 3].tolist()}) == 3 for i in range(4))


def test_dpp_stops_at_eps_and_fills_by_relevance() -> None:
    # All embeddings equal: after the first pick every gain is ~0, so the list is plain top-k.
    rng = np.random.default_rng(3)
    rel = rng.random(12).astype(np.float32)
    same = np.tile(unit_rows(rng, 1, 8), (12, 1))
    assert DPP(0.3).select(rel, same, 5).tolist() == top_k(rel, 5).tolist()
    # Rank 2: two diverse picks, then relevance order among the rest.
    two = np.repeat(np.eye(2, dtype=np.float32), 6, axis=0)
    picks = DPP(0.3).select(rel, two, 6).tolist()
    rest = [i for i in top_k(rel, 12).tolist() if i not in picks[:2]]
    assert {p // 6 for p in picks[:2]} == {0, 1}
    assert picks[2:] == rest[:4]


def test_dpp_is_scale_safe_near_theta_one() -> None:
    # alpha = theta / (2 (1 - theta)) is ~5e5 here; exp(alpha * rel) alone would overflow.
    rng = np.random.default_rng(5)
    rel = (100 * rng.random(50)).astype(np.float32)
    picks = DPP(0.999999).select(rel, unit_rows(rng, 50, 16), 10)
    assert picks.tolist() == top_k(rel, 10).tolist()


def test_dpp_checks_parameters_and_maps_candidates() -> None:
    e = np.eye(3, dtype=np.float32)
    assert DPP(0.5).rerank(["a", "b", "c"], np.array([0.1, 0.3, 0.2], dtype=np.float32), e, 2) == ["b", "c"]
    for bad in ({"theta": -0.1}, {"theta": 1.5}, {"window": 1}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            DPP(**bad)


# --- MMR reference -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 30), k=st.integers(0, 10), lam=st.floats(0.05, 1), seed=st.integers(0, 2**16))
def test_mmr_selects_what_brute_force_selects(n: int, k: int, lam: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel, emb = rng.random(n).astype(np.float32), unit_rows(rng, n, 8)
    assert MMR(lam).select(rel, emb, k).tolist() == naive_mmr(rel, emb, k, lam).tolist()


# --- calibration -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(0, 15), lam=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_calibrated_returns_min_k_n_distinct_positions(n: int, k: int, lam: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel, cats, profile = random_request(rng, n, single=False)
    picks = Calibrated(lam).bind(cats, profile).select(rel, unit_rows(rng, n, 4), k)
    assert_valid(picks, n, k)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_calibrated_at_lambda_zero_or_unbound_is_plain_top_k(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel, cats, profile = random_request(rng, n, single=False)
    emb = unit_rows(rng, n, 4)
    expected = top_k(rel, k).tolist()
    assert Calibrated(0.0).bind(cats, profile).select(rel, emb, k).tolist() == expected
    assert Calibrated(0.8).select(rel, emb, k).tolist() == expected  # nothing bound
    assert Calibrated(0.8).bind(cats, {}).select(rel, emb, k).tolist() == expected  # cold-start user


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_calibration_lowers_miscalibration_vs_top_k(n: int, k: int, seed: int) -> None:
    # One genre per item, lambda=1: greedy is then never worse than top-k. (With several genres per
    # item greedy can be: after a two-genre item, two one-genre items may complete the mix better.)
    rng = np.random.default_rng(seed)
    rel, cats, profile = random_request(rng, n, single=True)
    picks = Calibrated(1.0).bind(cats, profile).select(rel, unit_rows(rng, n, 4), k)
    calibrated = miscalibration([cats[i] for i in picks], profile)
    plain = miscalibration([cats[i] for i in top_k(rel, k)], profile)
    assert calibrated <= plain + 1e-12


def test_calibration_matches_the_users_mix_where_top_k_does_not() -> None:
    # A 60/40 drama/comedy user who never watches horror; top-k is two horrors and three dramas.
    cats = [("drama",)] * 6 + [("comedy",)] * 4 + [("horror",)] * 2
    rel = np.array([0.95, 0.94, 0.93, 0.92, 0.91, 0.9, 0.6, 0.59, 0.58, 0.57, 0.99, 0.98], dtype=np.float32)
    profile = {"drama": 0.6, "comedy": 0.4}
    emb = np.eye(12, dtype=np.float32)
    plain = top_k(rel, 5)
    picks = Calibrated(0.9).bind(cats, profile).select(rel, emb, 5)
    # Exactly 3 dramas and 2 comedies, each genre's best first: relevance still decides within a genre.
    assert picks.tolist() == [0, 6, 1, 2, 7]
    assert miscalibration([cats[i] for i in picks], profile) == pytest.approx(0.0, abs=1e-12)
    assert miscalibration([cats[i] for i in plain], profile) > 1.8
    # With more weight on relevance the mix is only partly corrected, but still better than top-k.
    half = Calibrated(0.5).bind(cats, profile).select(rel, emb, 5)
    between = miscalibration([cats[i] for i in half], profile)
    assert 0.0 < between < miscalibration([cats[i] for i in plain], profile)


def test_calibrated_multi_genre_items_share_their_weight() -> None:
    # Half drama/half comedy items calibrate a 50/50 user on their own; duplicates count once.
    assert miscalibration([("drama", "comedy", "drama")], {"drama": 1, "comedy": 1}) == pytest.approx(0.0)
    assert miscalibration([], {"drama": 1}) == pytest.approx(np.log(100))  # q~ = alpha * p


def test_calibrated_checks_parameters_and_lengths() -> None:
    bound = Calibrated(0.5).bind([("a",), ("b",)], {"a": 1.0})
    assert bound.bound and not Calibrated(0.5).bound
    with pytest.raises(ValueError):
        bound.select(np.zeros(3, dtype=np.float32), np.eye(3, dtype=np.float32), 2)
    with pytest.raises(ValueError):
        Calibrated(0.5).bind([("a",)], {"a": -1.0})
    for bad in ({"lambda_": 1.5}, {"alpha": 0.0}):
        with pytest.raises(ValueError):
            Calibrated(**bad)


# --- benchmark ---------------------------------------------------------------------------------------


def test_bench_rerank_reports_every_algorithm() -> None:
    result = bench_rerank(n=40, k=5, d=16, repeats=3)
    assert set(result) == {
        "relevance",
        "mmr",
        "dpp",
        "dpp_window10",
        "calibrated",
        "calibrated_select",
        "naive_mmr",
        "naive_dpp",
    }
    for stats in result.values():
        assert 0 < stats["median_ms"] <= stats["p99_ms"]
        assert stats["repeats"] >= 3
