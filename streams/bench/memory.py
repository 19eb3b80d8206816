"""Memory of user state: serialized bytes per user, and the resident memory of holding many users.

States are folded from real MovieLens histories with the worker's interest model and settings;
RSS is measured in a fresh subprocess holding ``bytes -> bytes`` like the worker's in-memory
Faust table (the table's store is a dict of the serialized key and value).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench import rss_bytes
from streams.bench.catalog import EmbeddedCatalog
from streams.interest import MultiInterest, MultiInterestState
from streams.interest.weights import engagement_weight
from streams.settings import Settings

#: Sizes are also reported after a user's n-th event, for these n.
CHECKPOINTS = (1, 10, 50, 100, 500, 1000)


def fold_states(catalog: EmbeddedCatalog, settings: Settings) -> tuple[dict[str, bytes], dict[int, list[int]]]:
    """Every user's final serialized state, and the state sizes seen after the n-th event of each user."""
    model = MultiInterest(
        catalog.vectors.shape[1],
        max_interests=settings.interests,
        half_life=settings.interest_half_life,
        history_size=settings.history_size,
    )
    rows = {item.item_id: i for i, item in enumerate(catalog.data.items)}
    states: dict[str, MultiInterestState] = {}
    at: dict[int, list[int]] = defaultdict(list)
    for event in catalog.data.events:
        row = rows[event.item_id]
        state = states.get(event.user_id) or model.new_state()
        item = catalog.data.items[row]
        states[event.user_id] = model.learn_one(
            state, event.item_id, catalog.vectors[row], engagement_weight(event), event.ts, item.categories
        )
        if state.events in CHECKPOINTS:
            at[state.events].append(len(state.to_bytes()))
    return {user: state.to_bytes() for user, state in states.items()}, at


def _stats(sizes: list[int]) -> dict[str, float]:
    arr = np.asarray(sizes, dtype=np.float64)
    return {
        "users": float(len(arr)),
        "mean": float(arr.mean()),
        "p50": float(np.median(arr)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def bench_memory(catalog: EmbeddedCatalog, settings: Settings, users: int = 100_000) -> dict[str, Any]:
    """Bytes of serialized state per user (all users, and after n events) and RSS for ``users`` users."""
    states, at = fold_states(catalog, settings)
    sizes = [len(v) for v in states.values()]
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "states.json"
        samples.write_text(json.dumps([v.hex() for v in states.values()]))
        rss = _measure_rss(samples, users)
    per_user = rss["rss_growth_bytes"] / users
    return {
        "events": len(catalog.data.events),
        "interests": settings.interests,
        "history_size": settings.history_size,
        "state_bytes": _stats(sizes),
        "state_bytes_after_n_events": {str(n): _stats(at[n]) for n in CHECKPOINTS if at[n]},
        "rss": {**rss, "users": users, "bytes_per_user": per_user, "mib_per_100k_users": per_user * 1e5 / 2**20},
    }


def _measure_rss(samples: Path, users: int) -> dict[str, float]:
    """Run :func:`_hold` in a fresh interpreter, so nothing else this process allocated counts."""
    out = subprocess.run(
        [sys.executable, "-m", "streams.bench.memory", str(samples), str(users)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _hold(samples: Path, users: int) -> dict[str, float]:
    """RSS growth from a dict of ``users`` user keys to states cycled from the real ones (each its own copy)."""
    real = [bytes.fromhex(h) for h in json.loads(samples.read_text())]
    before = rss_bytes()
    table = {f"{i}".encode(): bytes(bytearray(real[i % len(real)])) for i in range(users)}
    after = rss_bytes()
    payload = sum(len(k) + len(v) for k, v in table.items())
    return {"rss_before_bytes": before, "rss_growth_bytes": after - before, "payload_bytes": payload}


if __name__ == "__main__":
    print(json.dumps(_hold(Path(sys.argv[1]), int(sys.argv[2]))))
