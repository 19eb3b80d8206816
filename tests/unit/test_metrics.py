"""Metrics without Kafka: what the instrumented recommender and encoder record, bounded labels, coverage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from encoders import Encoder, EncoderError
from streams.build import build_recommender
from streams.contracts import Event, Recommendation, RecommendedItem
from streams.metrics import EXPLORE, ListProbe, Metrics, intra_list_diversity
from streams.metrics.instrument import InstrumentedEncoder
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from tests.unit import test_layering

#: Every label name the worker's own metrics may carry: all of them bounded by code or settings.
BOUNDED_LABELS = {"type", "policy", "arm", "source", "reranker", "reason", "encoder", "partition", "le", "role"}


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def event(n: int, user: str, item: str, kind: str = "click") -> Event:
    return Event(event_id=f"e{n}", user_id=user, item_id=item, type=kind, ts=float(n))


def test_metrics_package_imports_no_streaming_framework() -> None:
    test_layering.test_core_module_imports_no_streaming_framework("streams.metrics")


def small_catalog(n: int = 60, dim: int = 8) -> Catalog:
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog(dim)
    catalog.upsert([CatalogItem(f"i{i}", f"item {i}") for i in range(n)], vectors)
    return catalog


def published(catalog: Catalog, m: Metrics, events: list[Event], policy: str = "mmr") -> list[Recommendation]:
    recommender = build_recommender(Settings(k=4, policy=policy), catalog)
    result = recommender.process([(e.user_id.encode(), e) for e in events], {})
    stamps = [100.0] * (len(events) - 1) + [100.5]
    ListProbe(catalog, m).published(events, stamps, result.lists, result.traces, now=101.0)
    return result.lists


def test_probe_records_each_published_list() -> None:
    m = Metrics()
    m.prepare(policies=["mmr"], encoder="local")
    catalog = small_catalog()
    recs = published(catalog, m, [event(0, "u1", "i1"), event(1, "u1", "i2", "view"), event(2, "u2", "i3")])

    assert value(m, "streamrec_recommendations_total", policy="mmr") == 3
    assert value(m, "streamrec_impressions_total", policy="mmr", arm=recs[0].arm) == 12
    assert value(m, "streamrec_feedback_clicks_total", policy="mmr", arm=recs[0].arm) == 0  # CTR 0, not "no data"
    assert (value(m, "streamrec_events_consumed_total", type="click"),
            value(m, "streamrec_events_consumed_total", type="view")) == (2, 1)
    assert value(m, "streamrec_end_to_end_latency_seconds_sum") == pytest.approx(2.5)
    assert value(m, "streamrec_rerank_duration_seconds_count", reranker="mmr") == 3
    assert value(m, "streamrec_candidate_pool_size_count", source="similar") == 3  # clicks and views engage
    pool_sums = [s for f in m.registry.collect() for s in f.samples if s.name == "streamrec_candidate_pool_size_sum"]
    pooled = sum(s.value for s in pool_sums)
    assert pooled == 59 + 58 + 59  # the whole small catalog but the user's history, each item once
    assert value(m, "streamrec_list_ild_count", policy="mmr") == 3
    one_by_one = [intra_list_diversity(catalog.vectors[catalog.rows([i.item_id for i in r.items])]) for r in recs]
    assert value(m, "streamrec_list_ild_sum", policy="mmr") == pytest.approx(sum(one_by_one), rel=1e-9)
    assert value(m, "streamrec_list_exploration_share_sum", policy="mmr") == 0
    assert value(m, "streamrec_list_exploration_share_count", policy="mmr") == 3
    assert value(m, "streamrec_recommended_distinct_items") == len({i.item_id for r in recs for i in r.items})


def test_labels_stay_bounded_whatever_the_ids() -> None:
    catalog = small_catalog()
    m = Metrics()

    def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for fam in m.registry.collect() for s in fam.samples}

    def run(users: range) -> None:
        published(catalog, m, [event(n, f"user-{n}", f"i{n % 60}") for n in users], policy="dpp_explore")
        m.dead_letter("schema")
        m.set_consumer_lag({0: 1, 1: 2})

    run(range(10))
    before = series()
    run(range(10, 200))
    assert series() == before, "new users and items must not create new series"
    assert {name for _, labels in before for name, _ in labels} <= BOUNDED_LABELS
    assert value(m, "streamrec_list_exploration_share_sum", policy="dpp_explore") > 0


def test_intra_list_diversity() -> None:
    same = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (4, 1))
    assert intra_list_diversity(same) == pytest.approx(0.0, abs=1e-6)
    assert intra_list_diversity(np.eye(5, dtype=np.float32)) == pytest.approx(1.0)


def test_exploration_share_is_the_fraction_of_explore_items() -> None:
    m = Metrics()
    items = [RecommendedItem(item_id=str(n), score=0.0, reason=EXPLORE if n < 1 else "similar") for n in range(4)]
    m.list_produced("mmr", "default", items, 1.0)
    assert value(m, "streamrec_list_exploration_share_sum", policy="mmr") == 0.25


def test_coverage_counts_distinct_items_within_the_window() -> None:
    now = [0.0]
    m = Metrics(coverage_window_s=60, clock=lambda: now[0])

    def show(*ids: str) -> None:
        m.list_produced("mmr", "a", [RecommendedItem(item_id=i, score=1.0, reason="similar") for i in ids], 1.0)

    show("a", "b")
    now[0] = 50
    show("b", "c")
    assert value(m, "streamrec_recommended_distinct_items") == 3
    now[0] = 100  # "a" was last shown 100 s ago, "b" and "c" 50 s ago
    assert value(m, "streamrec_recommended_distinct_items") == 2
    now[0] = 200
    assert value(m, "streamrec_recommended_distinct_items") == 0


def test_consumer_lag_forgets_partitions_no_longer_owned() -> None:
    m = Metrics()
    m.set_consumer_lag({0: 5, 1: 7})
    m.set_consumer_lag({1: 3})
    assert value(m, "streamrec_consumer_lag_messages", partition="1") == 3
    assert m.registry.get_sample_value("streamrec_consumer_lag_messages", {"partition": "0"}) is None


def test_sizes_are_read_when_scraped() -> None:
    m = Metrics()
    sizes = {"items": 3, "users": 1}
    m.track_sizes(items=lambda: sizes["items"], users=lambda: sizes["users"])
    sizes["items"] = 10
    assert value(m, "streamrec_item_index_size") == 10
    assert value(m, "streamrec_user_state_table_size") == 1


class FlakyEncoder(Encoder):
    def __init__(self) -> None:
        self.fail = False

    @property
    def dim(self) -> int:
        return 2

    async def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.fail:
            raise EncoderError("server unavailable")
        return np.ones((len(texts), 2), dtype=np.float32)

    async def close(self) -> None:
        pass


async def test_encoder_requests_and_errors() -> None:
    m = Metrics()
    inner = FlakyEncoder()
    encoder = InstrumentedEncoder(inner, m, "triton")
    assert (await encoder.encode(["a", "b", "c"])).shape == (3, 2)
    inner.fail = True
    with pytest.raises(EncoderError):
        await encoder.encode(["d"])
    assert value(m, "streamrec_encoder_request_duration_seconds_count", encoder="triton") == 1
    assert value(m, "streamrec_encoder_batch_size_sum", encoder="triton") == 3
    assert value(m, "streamrec_encoder_errors_total", encoder="triton") == 1


def test_prepared_series_exist_at_zero() -> None:
    m = Metrics()
    m.prepare(policies=["mmr"], encoder="local")
    text = m.exposition().decode()
    for line in ('streamrec_dead_letters_total{reason="unknown_item"} 0.0',
                 'streamrec_encoder_errors_total{encoder="local"} 0.0',
                 'streamrec_events_consumed_total{type="purchase"} 0.0'):
        assert line in text


def test_clicks_on_shown_items_count_towards_ctr() -> None:
    catalog = small_catalog()
    recommender = build_recommender(Settings(k=4, policy="mmr"), catalog)
    m = Metrics()
    m.prepare(policies=["mmr"], encoder="local")
    probe = ListProbe(catalog, m)
    first = [event(0, "u1", "i1")]
    result = recommender.process([(e.user_id.encode(), e) for e in first], {})
    probe.published(first, [0.0], result.lists, result.traces, result.rewards, now=1.0)
    shown = result.lists[0].items[1].item_id
    click = [event(1, "u1", shown)]  # the user clicks the second item we showed
    result = recommender.process([(e.user_id.encode(), e) for e in click], {})
    probe.published(click, [1.0], result.lists, result.traces, result.rewards, now=2.0)
    assert [(r.item_id, r.reward) for r in result.rewards] == [(shown, 1.0)]
    assert value(m, "streamrec_feedback_clicks_total", policy="mmr", arm="mmr") == 1
    assert value(m, "streamrec_impressions_total", policy="mmr", arm="mmr") == 8
