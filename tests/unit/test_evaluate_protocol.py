"""The replay protocol (no look-ahead, what is scored when), the baselines and the system list."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from streams.contracts import Event, Item, Recommendation, RecommendedItem
from streams.evaluate import BASELINES, Prequential, make_baseline, next_positives, replay, system_names
from streams.evaluate.data import build_catalog
from streams.evaluate.metrics import RunMetrics
from streams.evaluate.run import make_system
from streams.recommender import BatchResult
from streams.settings import Settings


def rating(n: int, user: str, item: str, value: float) -> Event:
    return Event(event_id=f"e{n}", user_id=user, item_id=item, type="rating", value=value, ts=1000.0 + n)


class Echo:
    """Publishes, after each event, a list holding that event's item and what the system has seen so far.

    A protocol that scored the list published *after* an event (look-ahead) would find every target
    at rank 1; the right one scores the list published after the user's *previous* event.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process(self, events: Sequence[tuple[bytes, Event]], store: Mapping[bytes, bytes]) -> BatchResult:
        out = []
        for _, e in events:
            self.seen.append(e.event_id)
            item = RecommendedItem(item_id=e.item_id, score=1.0, reason=str(len(self.seen)))
            out.append(Recommendation(user_id=e.user_id, event_id=e.event_id, generated_at=0.0, policy="echo",
                                      items=[item]))
        return BatchResult(out, {}, [], [])


def test_next_positives_are_this_and_the_users_next_four() -> None:
    events = [rating(i, "u", f"i{i}", 5.0 if i != 2 else 2.0) for i in range(8)] + [rating(8, "v", "i0", 4.0)]
    targets = next_positives(events)
    assert targets["e0"] == ["i0", "i1", "i3", "i4", "i5"], "the 2-star rating is a view, not a target"
    assert targets["e7"] == ["i7"] and targets["e8"] == ["i0"]
    assert "e2" not in targets


def test_the_list_scored_at_an_event_is_the_one_published_before_it() -> None:
    # u: e0 (view), e1 (+), v: e2 (+, first event: cold), u: e3 (+); everything in one batch
    events = [rating(0, "u", "a", 3.0), rating(1, "u", "b", 5.0), rating(2, "v", "c", 4.0), rating(3, "u", "d", 4.5)]
    echo = Echo()
    preq = Prequential(events, {"a": ["x"], "b": ["y"], "c": [], "d": ["x"]}, "echo")
    out = [s for e, rec in replay(echo, events, batch_size=10) if (s := preq.feed(e, rec)) is not None]
    assert [(s.event_id, s.items, s.targets) for s in out] == [("e1", ["a"], ["b", "d"]), ("e3", ["b"], ["d"])]
    assert preq.cold == 1, "v's first event had no list before it"
    # what the metrics know at e3: three events so far, one on b; u's positives so far: b (genre y)
    assert out[1].counts == [1.0] and out[1].total == 3.0 and out[1].user_genres == {"y": 1.0}
    # look-ahead would have been a hit every time; the protocol's answer is none
    run = RunMetrics({k: i for i, k in enumerate("abcd")}, np.eye(4, dtype=np.float32), [frozenset()] * 4)
    for s in out:
        run.add(s)
    assert run.summary()["hr@10"] == 0.0


def test_feeding_a_list_with_the_wrong_event_is_refused() -> None:
    events = [rating(0, "u", "a", 5.0), rating(1, "u", "b", 5.0)]
    recs = [rec for _, rec in replay(Echo(), events, batch_size=1)]
    with pytest.raises(ValueError, match="fed with event"):
        Prequential(events, {}, "echo").feed(events[0], recs[1])


def small_world(n_items: int = 40, dim: int = 8, seed: int = 0) -> tuple[list[Item], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    genres = ["drama", "comedy", "action", "horror"]
    items = [Item(item_id=f"m{i}", title=f"Movie {i}", categories=[genres[i % 4], genres[(i // 4) % 4]],
                  created_at=float(i)) for i in range(n_items)]
    return items, vectors


def stream(items: list[Item], n: int = 300, users: int = 6, seed: int = 1) -> list[Event]:
    rng = np.random.default_rng(seed)
    popular = [it.item_id for it in items[:8]]
    out = []
    for i in range(n):
        pick = popular if rng.random() < 0.6 else [it.item_id for it in items]
        item = pick[int(rng.integers(len(pick)))]
        out.append(rating(i, f"u{int(rng.integers(users))}", item, float(rng.choice([2.0, 3.5, 4.0, 5.0]))))
    return out


@pytest.mark.parametrize("kind", BASELINES)
def test_baselines_list_k_distinct_untouched_items(kind: str) -> None:
    items, vectors = small_world()
    settings = Settings(k=5)
    events = stream(items)
    touched: dict[str, set[str]] = {}
    for event, rec in replay(make_baseline(kind, settings, build_catalog(items, vectors, settings)), events, 7):
        touched.setdefault(event.user_id, set()).add(event.item_id)
        ids = [i.item_id for i in rec.items]
        assert len(ids) == 5 == len(set(ids)) and rec.policy == kind
        assert not set(ids) & touched[event.user_id]


def test_popular_baseline_ranks_by_what_earlier_batches_engaged_with() -> None:
    items, vectors = small_world()
    settings = Settings(k=3)
    system = make_baseline("popular", settings, build_catalog(items, vectors, settings))
    first = [rating(0, "a", "m7", 5.0), rating(1, "a", "m7", 5.0), rating(2, "b", "m9", 5.0), rating(3, "c", "m3", 4.0)]
    list(replay(system, first, batch_size=10))
    (_, rec), = replay(system, [rating(4, "d", "m0", 3.0)], batch_size=1)
    assert [i.item_id for i in rec.items] == ["m7", "m9", "m3"]


def test_cosine_baseline_puts_the_nearest_item_first() -> None:
    items, vectors = small_world()
    settings = Settings(k=3)
    system = make_baseline("cosine", settings, build_catalog(items, vectors, settings))
    (_, rec), = replay(system, [rating(0, "a", "m5", 5.0)], batch_size=1)
    sims = vectors @ vectors[5]
    sims[5] = -np.inf
    assert rec.items[0].item_id == f"m{int(np.argmax(sims))}"


@pytest.mark.parametrize("name", ["random", "dpp_explore", "calibrated"])
def test_a_replay_publishes_the_same_lists_twice(name: str) -> None:
    items, vectors = small_world()
    settings = Settings(k=5, batch_size=16)
    events = stream(items, n=200)
    runs = []
    for _ in range(2):
        system = make_system(name, settings, build_catalog(items, vectors, settings))
        runs.append([[i.item_id for i in rec.items] for _, rec in replay(system, events, 16)])
    assert runs[0] == runs[1]


def test_system_names_and_sweeps() -> None:
    names = system_names()
    assert names[: len(BASELINES)] == list(BASELINES)
    assert {"relevance", "mmr", "dpp", "calibrated", "dpp_explore", "mmr@0.3", "dpp@0.9", "calibrated@0.9"} <= {*names}
    assert "mmr@0.7" not in system_names(lambdas=[0.7]) and "calibrated@0.7" in system_names(lambdas=[0.7])
    with pytest.raises(ValueError, match="unknown"):
        system_names(["nope"])
    s = Settings()
    assert make_system("mmr@0.3", s, build_catalog(*small_world(), s)).policies["mmr"].reranker.lambda_ == 0.3  # type: ignore[attr-defined]


class CountingEncoder:
    """Stands in for LocalEncoder: a vector per text from its length, and a count of the texts embedded."""

    model_path, max_length, dim = "fake", 8, 2

    def __init__(self) -> None:
        self.embedded = 0

    async def encode(self, texts: list[str]) -> np.ndarray:
        self.embedded += len(texts)
        return np.array([[len(t), 1.0] for t in texts], np.float32)


def test_catalog_vectors_are_cached_by_texts_and_encoder(tmp_path: Path) -> None:
    from streams.evaluate import catalog_vectors

    items, _ = small_world(n_items=5)
    enc = CountingEncoder()
    first = catalog_vectors(items, tmp_path, enc)  # type: ignore[arg-type]
    again = catalog_vectors(items, tmp_path, enc)  # type: ignore[arg-type]
    assert enc.embedded == 5 and np.array_equal(first, again), "the second call reads the cache"
    renamed = [items[0].model_copy(update={"title": "Another title"}), *items[1:]]
    catalog_vectors(renamed, tmp_path, enc)  # type: ignore[arg-type]
    assert enc.embedded == 10, "a changed text is a new cache entry, never a stale hit"


def test_dumped_lists_recompute_the_reported_ranking_metrics(tmp_path: Path) -> None:
    from streams.evaluate import Evaluation, run_evaluation
    from streams.evaluate.metrics import hit_rate, ndcg

    items, vectors = small_world()
    events = stream(items, n=240)
    ev = Evaluation("small", items, events, Settings(k=5, batch_size=20), vectors)
    dump = tmp_path / "recs.jsonl"
    result, seconds = run_evaluation(ev, ["popular", "relevance"], dump_path=dump)
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert {line["policy"] for line in lines} == {"popular", "relevance"} and set(seconds) == {"popular", "relevance"}
    assert set(lines[0]) == {"user_id", "event_id", "ts", "policy", "items", "targets"}
    for name, metrics in result["policies"].items():
        mine = [line for line in lines if line["policy"] == name]
        assert len(mine) == result["protocol"]["lists_scored"] > 50
        assert metrics["hr@10"] == pytest.approx(np.mean([hit_rate(x["items"], set(x["targets"])) for x in mine]))
        assert metrics["ndcg@10"] == pytest.approx(np.mean([ndcg(x["items"], set(x["targets"])) for x in mine]))
