"""The shared models' snapshots: how big they are, how long publishing and loading one take,
and what a serving worker pays per event for writing its lessons down for the learner.

**Snapshot** (MovieLens, as ``bench core`` warms it; ``--items N``: a synthetic catalog in a fresh
process): every step the learner and a serving worker take with a snapshot, each timed alone (wall
clock, one BLAS thread), ``repeats`` times, medians. The learner: ``SharedModels.state()`` (under its
lock), ``encode()`` and ``to_chunks()`` (which checksums the payload). A serving worker: the
``Assembler`` putting the chunks back (checksumming again), ``decode()``, ``remap`` (under the catalog
lock), ``load_state`` into fresh models (off the event loop) and ``Recommender.use`` (under the lock,
between two batches). ``remap`` and ``load_state`` are also timed against a catalog that numbers the
items otherwise (the state's item ids shuffled: a full lookup and every row moved). Sizes: the
payload, its chunks and the raw bytes of each model's arrays; and whether the loaded models come back
byte-equal to the published ones.

**Scale**: the synthetic catalog's vectors are no part of a snapshot, so they are small here (``dim``);
the models are filled to what a long stream makes of them (:func:`fill_models`) rather than replayed.
RSS: after the catalog, the models' growth, and the peak growth while publishing and while loading
(the peak is reset between the two through ``/proc/self/clear_refs``).

**Serving cost**: the warmed MovieLens recommender (deep copies) replays the same ``events`` at batch
100 as role ``both`` (it learns in place) and as role ``serve`` (it learns its own batches in place
too, and each batch's lessons are encoded as a serving worker does: one ``to_record`` per input partition),
alternating (the order swapped every round); CPU ms per event around ``process`` and the encoding.
"""

from __future__ import annotations

import copy
import gc
import json
import statistics
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.progress import Progress
from threadpoolctl import threadpool_limits

from streams.bench import rss_bytes
from streams.bench.core import (
    PROFILE_BATCH,
    Advance,
    Batch,
    Store,
    Then,
    Workload,
    build_catalog,
    progress_bar,
    step,
    synthetic_workload,
    time_batches,
    warmed,
)
from streams.build import build_recommender, build_shared_models
from streams.learning import SharedModels
from streams.learning.lessons import from_record, to_record
from streams.learning.snapshot import MAX_CHUNK_BYTES, Assembler, Snapshot, decode, digest, encode, to_chunks
from streams.recommender import BatchResult, Recommender
from streams.settings import Settings

T = TypeVar("T")
#: The learner's steps, then a serving worker's, in the order they run.
PUBLISH = ("state", "encode", "to_chunks")
LOAD = ("assemble", "decode", "remap", "load_state", "use")
OTHER_ROWS = ("remap_other_rows", "load_state_other_rows")
#: What each side holds its lock for: the learner while it reads its models (its folding waits), a
#: serving worker while it reads the catalog's rows and swaps (its next batch waits).
UNDER_LOCK = {"learner": ("state",), "worker": ("remap", "use")}
MB = 1e6


def reset_peak() -> bool:
    """Start this process's peak RSS (``VmHWM``) over from now; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak(base: int, reset: bool) -> tuple[int, int] | None:
    """``(peak RSS, its growth over base)`` since the peak was reset, None if it could not be."""
    peak = rss_bytes("VmHWM")
    return (peak, peak - base) if reset else None


def _bytes_by_model(arrays: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for name, value in arrays.items():
        out[name.split(".", 1)[0]] += int(value.nbytes)
    return dict(out)


class Steps:
    """Each named step's wall-clock seconds, one entry per run."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def __call__(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        out = fn(*args)
        self.seconds[name].append(time.perf_counter() - started)
        return out


def publish_round(models: SharedModels, version: int, steps: Steps, facts: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The learner's side: ``models`` as snapshot ``version``'s chunks (its state and payload dropped on
    return, as the learner drops them once sent)."""
    state = steps("state", models.state)
    facts["array_bytes"] = _bytes_by_model(state)
    payload = steps("encode", encode, Snapshot(version, time.time(), {0: 0}, {0: 0}, 0, state))
    chunks = steps("to_chunks", to_chunks, payload, version)
    facts.update(payload_bytes=len(payload), chunks=len(chunks))
    return chunks


def _assemble(chunks: list[tuple[bytes, bytes]], version: int) -> bytes:
    assembler = Assembler()
    for key, value in chunks:
        assembler.add(key, value)
    whole = assembler.latest()
    if whole is None or whole[0] != version:
        raise RuntimeError(f"snapshot {version} did not come back whole from its {len(chunks)} chunks")
    return whole[1]


def load_round(
    chunks: list[tuple[bytes, bytes]], version: int, fresh: SharedModels, serving: Recommender, steps: Steps
) -> Snapshot:
    """A serving worker's side: ``chunks`` (emptied: they stand for the topic) put back together and
    loaded into ``fresh``, which ``serving`` then uses; the decoded snapshot."""
    payload = steps("assemble", _assemble, chunks, version)
    chunks.clear()
    snap = steps("decode", decode, payload)
    remap = steps("remap", fresh.remap, snap.arrays["items"])
    popularity = steps("load_state", fresh.load_state, snap.arrays, remap)
    steps("use", serving.use, fresh, popularity)
    return snap


def load_other_rows(snap: Snapshot, fresh: SharedModels, steps: Steps) -> None:
    """``remap`` and ``load_state`` for a catalog that numbers the items otherwise (the ids shuffled)."""
    shuffled = {**snap.arrays, "items": np.random.default_rng(snap.version).permutation(snap.arrays["items"])}
    remap = steps("remap_other_rows", fresh.remap, shuffled["items"])
    steps("load_state_other_rows", fresh.load_state, shuffled, remap)


def snapshot_round(
    models: SharedModels, fresh: Callable[[], SharedModels], serving: Recommender, version: int, steps: Steps
) -> dict[str, Any]:
    """Publish ``models`` as snapshot ``version`` and load it into ``fresh()`` models that ``serving`` then
    uses, timing each step; the sizes and the peak RSS of each side."""
    facts: dict[str, Any] = {}
    reset = reset_peak()
    base = rss_bytes()
    chunks = publish_round(models, version, steps, facts)
    facts["publish"] = _peak(base, reset)
    reset = reset_peak()
    base = rss_bytes()
    snap = load_round(chunks, version, fresh(), serving, steps)
    facts["load"] = _peak(base, reset)
    load_other_rows(snap, fresh(), steps)
    return facts


def measure_snapshot(
    models: SharedModels,
    fresh: Callable[[], SharedModels],
    serving: Recommender,
    repeats: int,
    advance: Advance | None = None,
) -> dict[str, Any]:
    """:func:`snapshot_round` ``repeats`` times: median ms per step, the sizes, the peak RSS growths."""
    published = digest(models.state())
    steps = Steps()
    rounds = []
    for version in range(1, repeats + 1):
        gc.collect()
        rounds.append(snapshot_round(models, fresh, serving, version, steps))
        if advance is not None:
            advance(1)
    ms = {name: 1e3 * statistics.median(seconds) for name, seconds in steps.seconds.items()}
    peaks = {side: [r[side] for r in rounds if r[side] is not None] for side in ("publish", "load")}
    first = rounds[0]
    return {
        "repeats": repeats,
        "items": len(models.catalog),
        "payload_bytes": first["payload_bytes"],
        "chunks": first["chunks"],
        "max_chunk_bytes": MAX_CHUNK_BYTES,
        "array_bytes": first["array_bytes"],
        "byte_equal": digest(serving.shared().state()) == published,
        "median_ms": ms,
        "runs_ms": {name: [1e3 * s for s in seconds] for name, seconds in steps.seconds.items()},
        "publish_ms": sum(ms[s] for s in PUBLISH),
        "load_ms": sum(ms[s] for s in LOAD),
        "lock_ms": {side: sum(ms[s] for s in names) for side, names in UNDER_LOCK.items()},
        # the most each side added to what the process held before it (the learner's or the worker's models)
        "peak_growth_mb": {side: max(g for _, g in got) / 2**20 if got else None for side, got in peaks.items()},
        "peak_rss_mb": max((p for values in peaks.values() for p, _ in values), default=0) / 2**20 or None,
    }


# --- MovieLens: a warmed recommender's models, and serving with and without learning ----------


def lessons_encoder(partitions: int, records: list[bytes]) -> Then:
    """What a serving worker does after each batch: one lessons record per input partition it touched
    (events partitioned by their key), appended to ``records``."""
    offsets = [0] * partitions

    def send(batch: Batch, result: BatchResult) -> None:
        assert result.lessons is not None
        part = np.fromiter((zlib.crc32(key) % partitions for key, _ in batch), np.int64, len(batch))
        for p in np.unique(part).tolist():
            mine = np.flatnonzero(part == p)
            offsets[p] += len(mine)
            records.append(to_record(result.lessons.take(mine), p, offsets[p]))

    return send


def follow_cost(recommender: Recommender, records: Sequence[bytes], events: int) -> float:
    """CPU ms per event to decode and learn ``records`` (another worker's lessons of ``events`` events)."""
    models = copy.deepcopy(recommender).shared()
    started = time.process_time()
    for raw in records:
        models.learn(from_record(raw)[2])
    return 1e3 * (time.process_time() - started) / events


def serving_cost(
    recommender: Recommender,
    store: Store,
    events: Sequence[Any],
    partitions: int,
    rounds: int,
    advance: Advance | None = None,
) -> dict[str, Any]:
    """CPU ms per event at batch 100, role ``both`` (learning in place) against role ``serve`` (learning its
    own batches in place too, and encoding their lessons for the learner), alternating on deep copies of
    the same warmed recommender and store."""
    cpu: dict[str, list[float]] = {"both": [], "serve": [], "follow": []}
    sizes: list[int] = []
    for r in range(rounds):
        for role in ("both", "serve") if r % 2 == 0 else ("serve", "both"):
            mine, states = copy.deepcopy(recommender), dict(store)
            written: list[bytes] = []
            then = lessons_encoder(partitions, written) if role == "serve" else None
            timed = time_batches(mine, states, events, PROFILE_BATCH, advance, then)
            cpu[role].append(timed["cpu_ms_per_event"])
            if role == "serve":
                sizes = [len(raw) for raw in written]
                cpu["follow"].append(follow_cost(recommender, written, len(events)))
    both, serve = statistics.median(cpu["both"]), statistics.median(cpu["serve"])
    return {
        "batch_size": PROFILE_BATCH,
        "events": len(events),
        "partitions": partitions,
        "rounds": rounds,
        "cpu_ms_per_event": cpu,
        "both_cpu_ms_per_event": both,
        "serve_cpu_ms_per_event": serve,
        "serve_over_both": serve / both,
        # what a worker following the learning topic spends on each event another worker handled
        "follow_cpu_ms_per_event": statistics.median(cpu["follow"]),
        "ratio_by_round": [s / b for s, b in zip(cpu["serve"], cpu["both"], strict=True)],
        "lessons_bytes_per_event": sum(sizes) / len(events),
        "lessons_records": len(sizes),
    }


def bench_snapshot(
    workload: Workload,
    settings: Settings,
    warmup: int = 20_000,
    events: int = 2_000,
    repeats: int = 5,
    rounds: int = 3,
    partitions: int = 4,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The ``snapshot`` section's MovieLens part: the warmed models' snapshot, and the serving cost."""
    timed = workload.events[warmup : warmup + events]
    with threadpool_limits(1):
        recommender, store = warmed(workload, settings, warmup, events, progress)
        with step(progress, f"serving, {rounds} rounds x 2 roles", 2 * rounds * len(timed)) as advance:
            serving = serving_cost(recommender, store, timed, partitions, rounds, advance)
        target = copy.deepcopy(recommender)  # the serving worker that loads the snapshot
        with step(progress, "snapshot, publish and load", repeats) as advance:
            snap = measure_snapshot(
                recommender.shared(), lambda: build_shared_models(settings, target.catalog), target, repeats, advance
            )
    return {
        "workload": {
            "dataset": workload.name,
            "items": len(workload.items),
            "users_warmed": len(store),
            "warmup_events": warmup,
            "warmup_batch": PROFILE_BATCH,
            "bandit": settings.bandit,
            "blas_threads": 1,
        },
        "snapshot": {**snap, **traffic(snap["payload_bytes"], settings)},
        "serving": serving,
    }


def traffic(payload_bytes: int, settings: Settings) -> dict[str, float]:
    """What publishing every ``STREAMREC_SNAPSHOT_INTERVAL_S`` sends to the broker (each serving worker
    reads as much back)."""
    return {
        "snapshot_interval_s": settings.snapshot_interval_s,
        "broker_mb_per_s": payload_bytes / MB / settings.snapshot_interval_s,
    }


# --- scale: a synthetic catalog of N items and models filled to size, in a fresh process -----


def fill_models(models: SharedModels, users: int, arms: int, seed: int = 0) -> None:
    """Models as big as a long stream over the catalog makes them, without replaying it (through
    ``load_state`` of a synthetic state): every co-visitation row holding ``max_neighbours``
    neighbours (a full row is cut back to that), every item known to MF with ``users`` users'
    factors, popularity for every item, the ranker as new and the bandit with ``arms`` arms."""
    rng = np.random.default_rng(seed)
    n, catalog = len(models.catalog), models.catalog
    explored = np.arange(min(arms, n))
    context = catalog.vectors[explored] if models.bandit.contextual else None
    models.bandit.learn_many(catalog.ids(explored), rng.integers(0, 2, len(explored)).tolist(), context)
    state = models.state()
    keep = models.covisit.max_neighbours
    factors = models.mf.n_factors
    state.update(
        {
            "popularity": rng.exponential(1.0, n),
            # ragged, as CoVisitation.state writes it: each row's `keep` neighbours one after another
            "covisit.nbr": rng.integers(0, n, n * keep, dtype=np.int32),
            "covisit.w": rng.exponential(1.0, n * keep),
            "covisit.fill": np.full(n, keep, np.int64),
            "mf.users": np.array([f"u{i}" for i in range(users)], np.str_),
            "mf.u": rng.normal(0.0, 0.1, (users, factors)).astype(np.float32),
            "mf.ub": rng.normal(0.0, 0.1, users).astype(np.float32),
            "mf.v": rng.normal(0.0, 0.1, (n, factors)).astype(np.float32),
            "mf.ib": rng.normal(0.0, 0.1, n).astype(np.float32),
            "mf.known": np.ones(n, bool),
            "mf.known_rows": np.arange(n, dtype=np.int64),
        }
    )
    catalog.load_popularity(models.load_state(state))


def scale_snapshot(
    items: int,
    settings: Settings,
    users: int = 100_000,
    arms: int = 0,
    repeats: int = 3,
    dim: int = 16,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """In this process: a catalog of ``items`` synthetic items, its models filled, then :func:`measure_snapshot`
    (``arms`` 0: a tenth of the items)."""
    gc.collect()
    rss_start = rss_bytes()
    workload = synthetic_workload(items, 0, dim=dim, seed=seed)
    with threadpool_limits(1):
        with step(progress, f"{items:,} items", items) as advance:
            catalog = build_catalog(workload, settings, advance)
        del workload
        gc.collect()
        rss_catalog = rss_bytes()
        models = build_shared_models(settings, catalog)
        fill_models(models, users, arms or items // 10, seed)
        gc.collect()
        rss_models = rss_bytes()
        serving = build_recommender(settings, catalog)
        with step(progress, "snapshot, publish and load", repeats) as advance:
            snap = measure_snapshot(models, lambda: build_shared_models(settings, catalog), serving, repeats, advance)
    return {
        "items": items,
        "dim": dim,
        "mf_users": users,
        "bandit_arms": arms or items // 10,
        "max_neighbours": models.covisit.max_neighbours,
        "rss_catalog_mb": (rss_catalog - rss_start) / 2**20,
        "rss_models_mb": (rss_models - rss_catalog) / 2**20,
        **snap,
        **traffic(snap["payload_bytes"], settings),
    }


def _child(raw: str) -> dict[str, Any]:
    args = json.loads(raw)
    with progress_bar(Console(stderr=True)) as progress:
        return scale_snapshot(settings=Settings(), progress=progress, **args)


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1])))
