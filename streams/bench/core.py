"""``Recommender.process`` alone, in-process: CPU ms per event by batch size, a profile, and scale.

**MovieLens** (the default): the latest-small catalog with the vectors ``streamrec evaluate`` uses
(embedded once and cached by :func:`streams.evaluate.data.catalog_vectors`) and its ratings in
time order. The shared models (popularity, co-visitation, MF, ranker, bandit) and the user
states are warmed by replaying the first ``warmup`` ratings at batch 100 (not timed); then, for
each batch size, a deep copy of that warmed recommender and store replays the same next ``events``
ratings, so every batch size starts from the same state and sees the same events. Per batch size:
CPU ms per event (``time.process_time`` of the calls to ``process`` alone, one BLAS thread), wall
ms per event, events/s (wall) and the wall time of one batch. A last copy replays the events at
:data:`PROFILE_BATCH` under cProfile (its times are inflated by the profiler; the timed runs are
not profiled): the top functions by own time and by cumulative time, in ms per event.

**Scale** (``items``): a synthetic catalog of N random unit vectors (seeded) and a synthetic stream
(Zipf popularity over the items, a few thousand users), for each index kind in a fresh process
(``python -m streams.bench.core``) so its resident memory is what a worker holding that catalog
would hold: build time, RSS after building, the catalog's growth of RSS (vectors and index), then
CPU ms per event at batch 100 after a warm-up.
"""

from __future__ import annotations

import copy
import cProfile
import gc
import json
import pstats
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from threadpoolctl import threadpool_limits

from streams.bench import in_child, rss_bytes
from streams.build import build_recommender, make_catalog
from streams.contracts import Event, EventType
from streams.evaluate.data import catalog_vectors, load_dataset
from streams.process import gc_thresholds
from streams.recommender import BatchResult, Recommender
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings

F32 = npt.NDArray[np.float32]
Store = dict[bytes, bytes]
Advance = Callable[[int], None]
Batch = list[tuple[bytes, Event]]
#: Work timed with each batch's ``process`` (as a worker does it right after).
Then = Callable[[Batch, BatchResult], None]

DEFAULT_BATCHES = (1, 10, 100, 500)
#: Warm-up batch size, the profiled batch size and the scale mode's batch size.
PROFILE_BATCH = 100
PROFILE_TOP = 15
INDEXES = ("exact", "hnsw")
#: The issue's target, for the record (never asserted).
TARGET_MS_PER_EVENT = 0.2
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workload:
    """A catalog (items and their vectors, row-aligned) and a stream of events, oldest first."""

    name: str
    items: list[CatalogItem]
    vectors: F32
    events: list[Event]


def movielens_workload(settings: Settings) -> Workload:
    """MovieLens latest-small as ``streamrec evaluate`` loads it, with its cached catalog vectors."""
    data = load_dataset("movielens")
    vectors = catalog_vectors(data.items, settings.cache_dir)
    items = [CatalogItem(it.item_id, it.title, tuple(it.categories), it.created_at) for it in data.items]
    return Workload("movielens", items, vectors, data.events)


def synthetic_workload(
    n_items: int,
    n_events: int,
    users: int = 3000,
    dim: int = 384,
    seed: int = 0,
    zipf: float = 1.0,
    genres: int = 20,
) -> Workload:
    """``n_items`` random unit vectors (made in chunks, float32) and ``n_events`` ratings: users
    uniform over ``users``, items by a Zipf law (exponent ``zipf``) over a random ranking of the
    catalog, ratings 1-5, one event every 10 s; 1-3 of ``genres`` genres per item."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, 65_536):
        chunk = rng.standard_normal((min(65_536, n_items - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start : start + len(chunk)] = chunk
    names = [f"g{g}" for g in range(genres)]
    n_genres = rng.integers(1, 4, size=n_items)
    first = rng.integers(0, genres, size=n_items)
    items = [
        CatalogItem(
            str(i), f"item {i}", tuple(names[(int(first[i]) + j) % genres] for j in range(int(n_genres[i]))), float(i)
        )
        for i in range(n_items)
    ]
    weights = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** zipf
    ranked = rng.permutation(n_items)
    picks = ranked[rng.choice(n_items, size=n_events, p=weights / weights.sum())]
    who = rng.integers(0, users, size=n_events)
    ratings = rng.choice([1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0], size=n_events, p=[0.05, 0.1, 0.2, 0.15, 0.25, 0.1, 0.15])
    t0 = float(n_items)  # after every item's creation time
    events = [
        Event(
            event_id=f"syn-{n}",
            user_id=f"u{int(who[n])}",
            item_id=str(int(picks[n])),
            type=EventType.RATING,
            value=float(ratings[n]),
            ts=t0 + 10.0 * n,
        )
        for n in range(n_events)
    ]
    return Workload(f"synthetic-{n_items}", items, vectors, events)


def build_catalog(
    workload: Workload, settings: Settings, advance: Advance | None = None, chunk: int = 20_000
) -> Catalog:
    """The catalog with the settings' index kind, upserted ``chunk`` items at a time (``advance(n)``
    after each: building HNSW for a million items takes minutes)."""
    catalog = make_catalog(settings, workload.vectors.shape[1])
    for start in range(0, len(workload.items), chunk):
        catalog.upsert(workload.items[start : start + chunk], workload.vectors[start : start + chunk])
        if advance is not None:
            advance(min(chunk, len(workload.items) - start))
    return catalog


def _batches(events: Sequence[Event], size: int) -> Iterator[Batch]:
    """Keyed as the worker keys them (the user id's bytes)."""
    for start in range(0, len(events), size):
        yield [(e.user_id.encode(), e) for e in events[start : start + size]]


def replay(recommender: Recommender, store: Store, events: Sequence[Event], size: int, advance: Advance | None) -> None:
    """``process`` the events in batches of ``size``, writing the new states into ``store``."""
    for batch in _batches(events, size):
        store.update(recommender.process(batch, store).states)
        if advance is not None:
            advance(len(batch))


def time_batches(
    recommender: Recommender,
    store: Store,
    events: Sequence[Event],
    size: int,
    advance: Advance | None = None,
    then: Then | None = None,
) -> dict[str, float]:
    """CPU and wall time of ``process`` alone over ``events`` in batches of ``size`` (the state
    writes and the keying are outside the clocks), or of ``process`` and ``then(batch, result)``
    when given. The caller passes copies: they are changed."""
    cpu = 0.0
    walls: list[float] = []
    gc.collect()
    for batch in _batches(events, size):
        c0, w0 = time.process_time(), time.perf_counter()
        result = recommender.process(batch, store)
        if then is not None:
            then(batch, result)
        walls.append(time.perf_counter() - w0)
        cpu += time.process_time() - c0
        store.update(result.states)
        if advance is not None:
            advance(len(batch))
    n, wall = len(events), sum(walls)
    ms = 1e3 * np.asarray(walls)
    return {
        "batch_size": size,
        "events": n,
        "batches": len(walls),
        "cpu_ms_per_event": 1e3 * cpu / n,
        "wall_ms_per_event": 1e3 * wall / n,
        "events_per_s": n / wall if wall > 0 else 0.0,
        "batch_wall_ms_p50": float(np.percentile(ms, 50)),
        "batch_wall_ms_p99": float(np.percentile(ms, 99)),
    }


def _where(filename: str, line: int) -> str:
    if filename == "~":  # a builtin
        return "~"
    path = Path(filename)
    try:
        return f"{path.resolve().relative_to(ROOT)}:{line}"
    except ValueError:
        parts = path.parts
        tail = parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
        return f"{'/'.join(tail)}:{line}"


def profile_rows(profiler: cProfile.Profile, events: int, top: int, key: str) -> list[dict[str, Any]]:
    """The ``top`` functions by ``key`` (``tottime``: own time, ``cumtime``: with callees), in ms per event."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    column = {"tottime": 2, "cumtime": 3}[key]
    ranked = sorted(stats.items(), key=lambda kv: kv[1][column], reverse=True)[:top]
    return [
        {
            "function": name,
            "where": _where(filename, line),
            "calls_per_event": calls / events,
            "tottime_ms_per_event": 1e3 * tottime / events,
            "cumtime_ms_per_event": 1e3 * cumtime / events,
        }
        for (filename, line, name), (_, calls, tottime, cumtime, _) in ranked
    ]


def profile_batches(
    recommender: Recommender, store: Store, events: Sequence[Event], size: int, top: int, advance: Advance | None = None
) -> dict[str, list[dict[str, Any]]]:
    profiler = cProfile.Profile()
    for batch in _batches(events, size):
        profiler.enable()
        result = recommender.process(batch, store)
        profiler.disable()
        store.update(result.states)
        if advance is not None:
            advance(len(batch))
    return {
        "profile": profile_rows(profiler, len(events), top, "tottime"),
        "profile_cumulative": profile_rows(profiler, len(events), top, "cumtime"),
    }


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def step(progress: Progress | None, description: str, total: int) -> Iterator[Advance | None]:
    if progress is None:
        yield None
        return
    task = progress.add_task(description, total=total)
    yield lambda n: progress.advance(task, n)
    progress.remove_task(task)


def warmed(
    workload: Workload, settings: Settings, warmup: int, events: int, progress: Progress | None = None
) -> tuple[Recommender, Store]:
    """A recommender on the workload's catalog and its user states, warmed by replaying the first
    ``warmup`` events at batch 100 (``events`` more must be left to time)."""
    if warmup + events > len(workload.events):
        raise ValueError(f"warmup + events = {warmup + events} but the workload has {len(workload.events)} events")
    with step(progress, "catalog", len(workload.items)) as advance:
        recommender = build_recommender(settings, build_catalog(workload, settings, advance))
    store: Store = {}
    with step(progress, f"warm-up, batch {PROFILE_BATCH}", warmup) as advance:
        replay(recommender, store, workload.events[:warmup], PROFILE_BATCH, advance)
    return recommender, store


def bench_core(
    workload: Workload,
    settings: Settings,
    warmup: int = 20_000,
    events: int = 2_000,
    batches: Sequence[int] = DEFAULT_BATCHES,
    top: int = PROFILE_TOP,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The ``core`` section's MovieLens part: workload, ``batches`` by size, the profile at batch 100."""
    timed = workload.events[warmup : warmup + events]
    with threadpool_limits(1), gc_thresholds(settings.gc_thresholds):  # as the worker
        recommender, store = warmed(workload, settings, warmup, events, progress)
        by_size: dict[str, dict[str, float]] = {}
        for size in batches:
            with step(progress, f"timed, batch {size}", len(timed)) as advance:
                by_size[str(size)] = time_batches(copy.deepcopy(recommender), dict(store), timed, size, advance)
        with step(progress, f"profiled, batch {PROFILE_BATCH}", len(timed)) as advance:
            profiled = profile_batches(copy.deepcopy(recommender), dict(store), timed, PROFILE_BATCH, top, advance)
    at_target = by_size.get(str(PROFILE_BATCH), {}).get("cpu_ms_per_event")
    return {
        "workload": {
            "dataset": workload.name,
            "items": len(workload.items),
            "dim": int(workload.vectors.shape[1]),
            "users_warmed": len(store),
            "warmup_events": warmup,
            "warmup_batch": PROFILE_BATCH,
            "timed_events": len(timed),
            "policy": settings.policy,
            "index": settings.index,
            "k": settings.k,
            "candidates": settings.candidates,
            "blas_threads": 1,
        },
        "batches": by_size,
        "profile_batch": PROFILE_BATCH,
        **profiled,
        "target": {
            "cpu_ms_per_event_at_batch_100": TARGET_MS_PER_EVENT,
            "measured": at_target,
            "met": None if at_target is None else at_target <= TARGET_MS_PER_EVENT,
        },
    }


# --- scale: synthetic catalogs of N items, one fresh process per (N, index) ------------------


def scale_one(
    items: int,
    index: str,
    settings: Settings,
    warmup: int = 2_000,
    events: int = 1_000,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One synthetic catalog of ``items`` with one index kind, in this process: memory and CPU ms per event."""
    s = settings.model_copy(update={"index": index})
    gc.collect()
    rss_before = rss_bytes()
    workload = synthetic_workload(items, warmup + events, seed=seed)
    vectors_mb = workload.vectors.nbytes / 2**20
    stream = workload.events
    with threadpool_limits(1), gc_thresholds(settings.gc_thresholds):
        started = time.perf_counter()
        with step(progress, f"{items:,} items, {index} index", items) as advance:
            catalog = build_catalog(workload, s, advance)
        build_s = time.perf_counter() - started
        del workload  # the catalog holds its own copy of the vectors, as a worker's does
        gc.collect()
        rss_built = rss_bytes()
        recommender = build_recommender(s, catalog)
        store: Store = {}
        with step(progress, f"warm-up, batch {PROFILE_BATCH}", warmup) as advance:
            replay(recommender, store, stream[:warmup], PROFILE_BATCH, advance)
        with step(progress, f"timed, batch {PROFILE_BATCH}", events) as advance:
            timed = time_batches(recommender, store, stream[warmup:], PROFILE_BATCH, advance)
    return {
        "items": items,
        "index": index,
        "build_s": build_s,
        "vectors_mb": vectors_mb,
        "catalog_mb": (rss_built - rss_before) / 2**20,
        "rss_mb": rss_built / 2**20,
        "rss_after_mb": rss_bytes() / 2**20,
        "peak_rss_mb": rss_bytes("VmHWM") / 2**20,
        "warmup_events": warmup,
        **{k: v for k, v in timed.items() if k != "batches"},
    }


def bench_scale(
    sizes: Sequence[int],
    settings: Settings,
    indexes: Sequence[str] = INDEXES,
    warmup: int = 2_000,
    events: int = 1_000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{N: {index: scale_one(...)}}``, each in a fresh interpreter (its progress bar on stderr).

    The input workload stays the stream's: the vectors the items agent would have written. The
    child's settings are the environment's (``STREAMREC_*``) with ``policy`` as given here.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        for index in indexes:
            args = {
                "items": n,
                "index": index,
                "policy": settings.policy,
                "warmup": warmup,
                "events": events,
                "seed": seed,
            }
            out.setdefault(str(n), {})[index] = in_child("streams.bench.core", args)
    return out


def _child(raw: str) -> dict[str, Any]:
    args = json.loads(raw)
    settings = Settings(policy=args["policy"])
    with progress_bar(Console(stderr=True)) as progress:
        return scale_one(args["items"], args["index"], settings, args["warmup"], args["events"], args["seed"], progress)


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1])))
