"""The lists of a fixed stream, pinned: a change that makes the core faster must not change them.

A small deterministic catalog (clusters of items with genres, some announced before their vectors,
one retired mid-stream) and stream (users with a favourite cluster or two, every event type) are
replayed from a fresh recommender at several batch sizes, under an A/B split of every policy with
Thompson sampling and under ``dpp_explore`` with LinUCB. Every list's items (id, score to 6
significant digits, reason), its candidate mix, the rewards (their count and digest) and every user's
final state (its bytes' SHA-256) must equal ``data/golden_lists.json``.

Regenerate it only when a change deliberately alters the lists (an approximation, a new feature)
and the offline evaluation was rerun to show the quality holds::

    STREAMREC_REGEN_GOLDEN=1 python -m pytest tests/unit/test_golden_lists.py

(the test then rewrites the file and skips; commit the file with the change that explains it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.build import build_recommender
from streams.contracts import Event
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from streams.testing import run_batch

GOLDEN = Path(__file__).parent / "data" / "golden_lists.json"
REGEN = os.environ.get("STREAMREC_REGEN_GOLDEN") == "1"

CLUSTERS, PER_CLUSTER, DIM, GENRES = 8, 30, 64, 6  # LinUCB projects to 64 dimensions
LATE = 16  # items announced without a vector; embedded between the second and third phase
USERS, PHASE = 24, 80
BATCH_SIZES = (1, 7, 40)
CONFIGS: dict[str, dict[str, Any]] = {
    # Every policy, Thompson sampling, nearest items and the cosine feature in a compact space.
    "split": {"ab_split": "relevance=1,mmr=1,dpp=1,calibrated=1,dpp_explore=2", "compact_dim": 16},
    # The default policy with a contextual bandit, on the full vectors.
    "linucb": {"policy": "dpp_explore", "bandit": "linucb", "explore_share": 0.3, "compact_dim": 0},
}
KINDS = ("view", "click", "like", "add_to_cart", "purchase", "rating")


def catalog_items() -> tuple[list[CatalogItem], np.ndarray, list[CatalogItem], np.ndarray]:
    """The embedded items and their vectors, and the late items (announced first) and theirs."""
    rng = np.random.default_rng(14)
    n = CLUSTERS * PER_CLUSTER + LATE
    centres = rng.normal(size=(CLUSTERS, DIM))
    vecs = centres[np.arange(n) % CLUSTERS] + 0.5 * rng.normal(size=(n, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    items = [
        CatalogItem(
            f"i{i}", f"title {i}",
            tuple(f"g{(i % CLUSTERS + j) % GENRES}" for j in range(1 + int(rng.integers(3)))),
            created_at=float(rng.integers(0, 5000)),
        )
        for i in range(n)
    ]
    return items[:-LATE], vecs[:-LATE], items[-LATE:], vecs[-LATE:]


def stream(items: list[CatalogItem]) -> list[tuple[bytes, Event]]:
    """Three phases of :data:`PHASE` events: users mostly in their favourite clusters, at times on any item."""
    rng = np.random.default_rng(15)
    favourites = [rng.choice(CLUSTERS, size=1 + int(rng.integers(2)), replace=False) for _ in range(USERS)]
    by_cluster = [[it.item_id for i, it in enumerate(items) if i % CLUSTERS == c] for c in range(CLUSTERS)]
    activity = 1.0 / np.arange(1, USERS + 1)
    events = []
    for n in range(3 * PHASE):
        u = int(rng.choice(USERS, p=activity / activity.sum()))
        pool = by_cluster[int(rng.choice(favourites[u]))] if rng.random() < 0.8 else [it.item_id for it in items]
        kind = str(rng.choice(KINDS, p=[0.3, 0.3, 0.1, 0.1, 0.05, 0.15]))
        value = float(rng.choice([1.0, 2.0, 3.5, 5.0])) if kind == "rating" else 1.0
        event = Event(event_id=f"e{n}", user_id=f"u{u}", item_id=str(rng.choice(pool)), type=kind, value=value,
                      ts=10_000.0 + 30.0 * n)
        events.append((event.user_id.encode(), event))
    return events


def replay(config: dict[str, Any], batch: int) -> dict[str, Any]:
    """Replay the stream at ``batch`` events a batch from a fresh recommender: what :data:`GOLDEN` pins."""
    early, early_vecs, late, late_vecs = catalog_items()
    catalog = Catalog(DIM, compact_dim=config.get("compact_dim", 0))
    catalog.upsert(early, early_vecs)
    catalog.announce(late)
    rec = build_recommender(Settings(k=10, **config), catalog)
    events = stream(early + late)
    store: dict[bytes, bytes] = {}
    lists, rewards = [], []
    for phase in range(3):
        if phase == 1:
            catalog.retire([f"i{i}" for i in range(0, CLUSTERS * PER_CLUSTER, 9)])
        if phase == 2:
            catalog.upsert(late, late_vecs)
        part = events[phase * PHASE : (phase + 1) * PHASE]
        for start in range(0, len(part), batch):
            result = run_batch(rec, part[start : start + batch], store)
            for out, trace in zip(result.lists, result.traces, strict=True):
                items = " ".join(f"{i.item_id}:{i.score:.6g}" for i in out.items)
                reasons = "|".join(i.reason.replace("similar to title ", "~") for i in out.items)  # titles: "title N"
                mix = ",".join(f"{s}={n}" for s, n in sorted(trace.pool.items()))
                lists.append(f"{out.event_id} {out.policy}/{out.arm} [{items}] ({reasons}) {{{mix}}}")
            rewards += [f"{r.item_id}:{r.reward:g}:{r.position}" for r in result.rewards]
    states = {key.decode(): hashlib.sha256(raw).hexdigest() for key, raw in sorted(store.items())}
    digest = hashlib.sha256(" ".join(rewards).encode()).hexdigest()
    return {"lists": lists, "rewards": f"{len(rewards)} {digest}", "states": states}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if REGEN:
        GOLDEN.parent.mkdir(exist_ok=True)
        runs = {f"{name}/{batch}": replay(config, batch) for name, config in CONFIGS.items() for batch in BATCH_SIZES}
        GOLDEN.write_text(json.dumps(runs, indent=0) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    loaded: dict[str, Any] = json.loads(GOLDEN.read_text())
    return loaded


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("name", CONFIGS)
def test_lists_and_states_equal_the_golden_replay(golden: dict[str, Any], name: str, batch: int) -> None:
    want = golden[f"{name}/{batch}"]
    got = replay(CONFIGS[name], batch)
    for i, (g, w) in enumerate(zip(got["lists"], want["lists"], strict=True)):
        assert g == w, f"list {i} differs"
    assert got["rewards"] == want["rewards"]
    assert got["states"] == want["states"]


def shown(line: str) -> set[str]:
    """The item ids of one pinned list."""
    return set(re.findall(r"(i\d+):", line.split("[", 1)[1].split("]", 1)[0]))


def test_the_golden_replay_exercises_what_it_pins(golden: dict[str, Any]) -> None:
    """The stream reaches every policy, exploration, rewards, and items retired or embedded late."""
    lists = [line for run in golden.values() for line in run["lists"]]
    for policy in ("relevance", "mmr", "dpp", "calibrated", "dpp_explore"):
        assert any(f" {policy}/" in line for line in lists), policy
    for reason in ("|explore", "~", "co-visited", "collaborative", "trending", "fresh"):
        assert any(reason in line for line in lists), reason
    retired = {f"i{i}" for i in range(0, CLUSTERS * PER_CLUSTER, 9)}
    late = {f"i{i}" for i in range(CLUSTERS * PER_CLUSTER, CLUSTERS * PER_CLUSTER + LATE)}
    for run in golden.values():
        assert not run["rewards"].startswith("0 ")
        phases = [set().union(*map(shown, run["lists"][p * PHASE : (p + 1) * PHASE])) for p in range(3)]
        assert phases[0] & retired and not (phases[1] | phases[2]) & retired
        assert phases[2] & late and not (phases[0] | phases[1]) & late
