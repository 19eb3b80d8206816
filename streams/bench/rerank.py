"""Latency of the rerankers on one core: every algorithm on the same random request, in one run."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from streams.rerank.base import FloatArray
from streams.rerank.calibration import Calibrated
from streams.rerank.dpp import DPP
from streams.rerank.mmr import MMR
from streams.rerank.naive import naive_dpp_greedy, naive_mmr
from streams.rerank.relevance import TopK


def _request(n: int, d: int, seed: int) -> tuple[FloatArray, FloatArray, list[tuple[str, ...]], dict[str, float]]:
    """Uniform relevance, unit Gaussian embeddings, 1-3 of 20 genres per item, a Dirichlet user profile."""
    rng = np.random.default_rng(seed)
    relevance = rng.random(n).astype(np.float32)
    embeddings = rng.normal(size=(n, d)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    genres = [f"g{g}" for g in range(20)]
    categories = [tuple(rng.choice(genres, size=int(rng.integers(1, 4)), replace=False)) for _ in range(n)]
    profile = rng.dirichlet(np.full(len(genres), 0.3))
    return relevance, embeddings, categories, dict(zip(genres, profile.tolist(), strict=True))


def _time(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm-up: first-call allocations and imports stay out of the numbers
    samples: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    ms: npt.NDArray[np.float64] = 1e3 * np.array(samples)
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "repeats": float(repeats)}


def bench_rerank(
    n: int = 500, k: int = 20, d: int = 384, repeats: int = 200, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{name: {"median_ms", "p99_ms", "repeats"}}`` for each reranker on one ``N x d`` request, one BLAS thread.

    ``calibrated`` includes ``bind`` (categories arrive with each request); ``calibrated_select`` is
    the greedy alone. The naive references run ``repeats // 40`` times (at least 3): they are slow.
    """
    relevance, embeddings, categories, profile = _request(n, d, seed)
    calibrated = Calibrated(lambda_=0.5)
    bound = calibrated.bind(categories, profile)
    slow = max(3, repeats // 40)
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "relevance": (lambda: TopK().select(relevance, embeddings, k), repeats),
        "mmr": (lambda: MMR(0.7).select(relevance, embeddings, k), repeats),
        "dpp": (lambda: DPP(0.7).select(relevance, embeddings, k), repeats),
        "dpp_window10": (lambda: DPP(0.7, window=10).select(relevance, embeddings, k), repeats),
        "calibrated": (lambda: calibrated.bind(categories, profile).select(relevance, embeddings, k), repeats),
        "calibrated_select": (lambda: bound.select(relevance, embeddings, k), repeats),
        "naive_mmr": (lambda: naive_mmr(relevance, embeddings, k, 0.7), slow),
        "naive_dpp": (lambda: naive_dpp_greedy(relevance, embeddings, k, 0.7), slow),
    }
    with threadpool_limits(1):
        return {name: _time(fn, times) for name, (fn, times) in cases.items()}
