"""The worker's Prometheus metrics: one :class:`Metrics` object holding every ``streamrec_*`` family.

Each :class:`Metrics` has its own :class:`~prometheus_client.CollectorRegistry` (no process-wide
globals), so tests create as many as they like. Labels only ever take values from a small set fixed by
the code or the settings (event type, policy, arm, candidate source, reranker, dead-letter reason,
encoder kind, partition): never a user id, item id or anything else that grows with the data.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.contracts import EventType, RecommendedItem
from streams.metrics.quality import exploration_share

#: Where the worker serves its metrics.
METRICS_PATH = "/metrics"
#: The dead-letter reasons the worker knows (``streams.contracts`` and ``parse_event``), exported at 0 from
#: the start so that rates and alerts work before the first bad message.
DEAD_LETTER_REASONS = (
    "empty", "too_large", "invalid_utf8", "invalid_json", "schema", "key_mismatch", "unknown_item", "processing_error",
)

# Bucket bounds, in the unit of the metric's name. The recommender's own steps take micro- to
# milliseconds, a trip through Kafka milliseconds, an encoder request milliseconds to seconds.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)
ENCODER_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
POOL_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000)
ILD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0)
SHARE_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


_Family = TypeVar("_Family", Counter, Histogram)


class Metrics:
    """Every ``streamrec_*`` metric, with one small method per thing the worker records.

    >>> m = Metrics()
    >>> m.dead_letter("invalid_json")
    >>> m.registry.get_sample_value("streamrec_dead_letters_total", {"reason": "invalid_json"})
    1.0
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        coverage_window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A declarative table of every metric family, one statement each: longer than the 80-line
        # limit on functions, and meant to be (split, it would be harder to read, not easier).
        self.registry = registry if registry is not None else CollectorRegistry()
        counter = functools.partial(Counter, registry=self.registry)
        gauge = functools.partial(Gauge, registry=self.registry)
        histogram = functools.partial(Histogram, registry=self.registry)
        self.events = counter("streamrec_events_consumed_total", "Usable events consumed, by event type", ["type"])
        self.recommendations = counter(
            "streamrec_recommendations_total", "Recommendation lists produced, by policy", ["policy"]
        )
        self.impressions = counter(
            "streamrec_impressions_total", "Items shown in produced lists, by policy and arm", ["policy", "arm"]
        )
        self.clicks = counter(
            "streamrec_feedback_clicks_total",
            "Clicks on recommended items attributed to the list that showed them, by policy and arm",
            ["policy", "arm"],
        )
        self.end_to_end = histogram(
            "streamrec_end_to_end_latency_seconds",
            "From the Kafka record timestamp of an event (not its business-time ts field) to its "
            "recommendation list being sent",
            buckets=LATENCY_BUCKETS_S,
        )
        self.encoder_latency = histogram(
            "streamrec_encoder_request_duration_seconds",
            "Successful encoder requests (one call of encode, the client's retries included), by encoder kind",
            ["encoder"], buckets=ENCODER_BUCKETS_S,
        )
        self.encoder_batch = histogram(
            "streamrec_encoder_batch_size", "Texts per encoder request, by encoder kind", ["encoder"],
            buckets=BATCH_BUCKETS,
        )
        self.encoder_errors = counter(
            "streamrec_encoder_errors_total", "Failed encoder requests, by encoder kind", ["encoder"]
        )
        self.candidate_pool = histogram(
            "streamrec_candidate_pool_size",
            "Candidates one list got from each retrieval source (de-duplicated, the user's history left out)",
            ["source"], buckets=POOL_BUCKETS,
        )
        self.rerank = histogram(
            "streamrec_rerank_duration_seconds", "Time to rerank one list, by reranker", ["reranker"],
            buckets=STEP_BUCKETS_S,
        )
        self.ild = histogram(
            "streamrec_list_ild",
            "Intra-list diversity of each produced list: mean pairwise cosine distance of its items, by policy",
            ["policy"], buckets=ILD_BUCKETS,
        )
        self.exploration = histogram(
            "streamrec_list_exploration_share",
            "Fraction of each produced list's items placed to explore (reason 'explore'), by policy",
            ["policy"], buckets=SHARE_BUCKETS,
        )
        self.dead_letters = counter(
            "streamrec_dead_letters_total", "Messages sent to the dead-letter topic, by reason", ["reason"]
        )
        self.replayed = counter(
            "streamrec_events_replayed_total",
            "Events read again after a restart whose effect was already in the user state (skipped, no second list)",
        )
        self.holes_read = counter(
            "streamrec_input_holes_read_total",
            "Input records the Kafka client skipped or never delivered, read straight from the broker, by topic",
            ["topic"],
        )
        self.consumer_lag = gauge(
            "streamrec_consumer_lag_messages",
            "Events not yet committed by this worker's consumer group: end offset minus committed offset, "
            "for each events partition assigned to this worker",
            ["partition"],
        )
        self.item_index_size = gauge("streamrec_item_index_size", "Items in this worker's catalog and vector index")
        self.items_on_topic = gauge("streamrec_catalog_items_on_topic", "Items on the items topic (not tombstoned)")
        self.items_waiting = gauge(
            "streamrec_catalog_items_waiting", "Items on the items topic whose newest version has no vector yet"
        )
        self.oldest_wait = gauge(
            "streamrec_catalog_oldest_wait_seconds",
            "How long the item waiting longest for its embedding has waited, from its Kafka timestamp (0: none waits)",
        )
        self.items_retired = gauge(
            "streamrec_catalog_items_retired", "Items retired (tombstone or available=false): in no list"
        )
        self.dropped_updates = counter(
            "streamrec_interest_updates_dropped_total",
            "Interest updates held for an item without a vector that were dropped (the event itself was "
            "handled), by reason: timeout (no vector in STREAMREC_UNKNOWN_ITEM_TIMEOUT_S) or bound (too many "
            "waiting for one user)",
            ["reason"],
        )
        self.events_waiting = gauge(
            "streamrec_events_waiting_for_items",
            "Events parked in their user's state until their item is on the items topic (then handled; "
            "dead-lettered as unknown_item after STREAMREC_UNKNOWN_ITEM_TIMEOUT_S)",
        )
        self.events_oldest_wait = gauge(
            "streamrec_events_waiting_oldest_seconds",
            "How long the event parked longest has waited for its item (0: none waits)",
        )
        self.user_states = gauge(
            "streamrec_user_state_table_size", "User states in this worker's partitions of the table"
        )
        self.snapshot_age = gauge(
            "streamrec_models_snapshot_age_seconds",
            "Seconds since the learner made the snapshot of the shared models this worker serves "
            "(0 when it learns itself)",
        )
        self.events_behind = gauge(
            "streamrec_models_events_behind",
            "Events this worker handled whose lessons the snapshot it serves does not include yet",
        )
        self.snapshot_version = gauge(
            "streamrec_models_snapshot_version",
            "Version of the snapshot served (a serving worker) or last published (the learner)",
        )
        self.snapshots = counter(
            "streamrec_models_snapshots_total", "Snapshots of the shared models published or loaded", ["role"]
        )
        self.snapshot_bytes = gauge("streamrec_models_snapshot_bytes", "Size of the last snapshot published or loaded")
        self.learner_records = counter(
            "streamrec_learner_records_total",
            "Lessons records (one per events partition and batch) the learner folded in",
        )
        self.learner_lag = gauge(
            "streamrec_learner_lag_records", "Lessons records on the learning topic the learner has not folded in yet"
        )
        self.recommended_items = gauge(
            "streamrec_recommended_distinct_items",
            f"Distinct items in the lists this worker produced in the last {coverage_window_s:g} s "
            "(catalog coverage = this / streamrec_item_index_size)",
        )
        self._window_s = coverage_window_s
        self._clock = clock
        self._last_shown: dict[str, float] = {}  # item id -> when last shown, oldest first; <= catalog size
        self._children: dict[tuple[int, tuple[str, ...]], Counter | Histogram] = {}
        self.recommended_items.set_function(self._distinct_recent)
        for kind in EventType:
            self.events.labels(kind.value)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for reason in ("timeout", "bound"):
            self.dropped_updates.labels(reason)
        for role in ("published", "loaded"):
            self.snapshots.labels(role)

    def prepare(self, *, policies: Iterable[str], encoder: str) -> None:
        """Export the series of this worker's policies and encoder at 0, before anything happens."""
        for policy in policies:
            for family in (self.recommendations, self.ild, self.exploration):
                family.labels(policy)
        for family in (self.encoder_latency, self.encoder_batch, self.encoder_errors):
            family.labels(encoder)

    def track_sizes(self, items: Callable[[], int], users: Callable[[], int]) -> None:
        """Read the catalog and user-table sizes when scraped (no bookkeeping on the hot path)."""
        self.item_index_size.set_function(items)
        self.user_states.set_function(users)

    def track_catalog(self, status: Callable[[], Mapping[str, float]]) -> None:
        """Read the catalog's progress when scraped, from ``status()`` (the status page's numbers)."""
        for gauge, key in ((self.items_on_topic, "items_on_topic"), (self.items_waiting, "items_waiting"),
                           (self.oldest_wait, "oldest_wait_s"), (self.items_retired, "items_retired")):
            gauge.set_function(functools.partial(lambda k: float(status()[k]), key))

    def track_waiting(self, events: Callable[[], int], oldest_s: Callable[[], float]) -> None:
        """Read the events parked for their items when scraped."""
        self.events_waiting.set_function(events)
        self.events_oldest_wait.set_function(oldest_s)

    def track_models(self, age_s: Callable[[], float], events_behind: Callable[[], float]) -> None:
        """Read how stale the served snapshot is when scraped."""
        self.snapshot_age.set_function(age_s)
        self.events_behind.set_function(events_behind)

    def snapshot(self, role: str, version: int, size: int) -> None:
        """A snapshot was ``published`` (the learner) or ``loaded`` (a serving worker)."""
        self.snapshots.labels(role).inc()
        self.snapshot_version.set(version)
        self.snapshot_bytes.set(size)

    # --- recording ---------------------------------------------------------------------------

    def _child(self, family: _Family, *labels: str) -> _Family:
        """``family.labels(*labels)``, kept: the per-list metrics would otherwise pay ``labels``' lock and
        lookup for every list (families whose series are ever removed must not use this)."""
        key = (id(family), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return cast(_Family, child)

    def event_consumed(self, event_type: str) -> None:
        self._child(self.events, event_type).inc()

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def interest_updates_dropped(self, dropped: Mapping[str, int]) -> None:
        for reason, count in dropped.items():
            self.dropped_updates.labels(reason).inc(count)

    def events_replayed(self, count: int) -> None:
        self.replayed.inc(count)

    def input_holes_read(self, topic: str, count: int) -> None:
        self.holes_read.labels(topic).inc(count)

    def list_produced(self, policy: str, arm: str, items: Sequence[RecommendedItem], ild: float | None) -> None:
        """One published list: its count, impressions, quality (``ild``: its intra-list diversity, see
        :func:`~streams.metrics.quality.intra_list_diversity_many`) and the items it covers."""
        # the clicks series of an arm exists from its first impression, so CTR reads 0, not "no data"
        self._child(self.clicks, policy, arm)
        self._child(self.recommendations, policy).inc()
        self._child(self.impressions, policy, arm).inc(len(items))
        if ild is not None:
            self._child(self.ild, policy).observe(ild)
        share = exploration_share(items)
        if share is not None:
            self._child(self.exploration, policy).observe(share)
        now = self._clock()
        for item in items:
            # re-inserting moves the item to the end: the dict stays ordered by last shown
            self._last_shown.pop(item.item_id, None)
            self._last_shown[item.item_id] = now

    def click(self, policy: str, arm: str) -> None:
        """A click attributed to a list of ``policy``/``arm`` (CTR = clicks / impressions, in PromQL)."""
        self._child(self.clicks, policy, arm).inc()

    def end_to_end_latency(self, seconds: float) -> None:
        self.end_to_end.observe(max(seconds, 0.0))  # producer and worker clocks may disagree slightly

    def encoder_request(self, encoder: str, batch_size: int, seconds: float) -> None:
        self.encoder_latency.labels(encoder).observe(seconds)
        self.encoder_batch.labels(encoder).observe(batch_size)

    def encoder_error(self, encoder: str) -> None:
        self.encoder_errors.labels(encoder).inc()

    def candidates(self, source: str, size: int) -> None:
        """``size`` candidates of one list came from ``source`` (a retrieval source name, never free text)."""
        self._child(self.candidate_pool, source).observe(size)

    def reranked(self, reranker: str, seconds: float) -> None:
        """One list took ``seconds`` to rerank with the reranker named ``reranker``."""
        self._child(self.rerank, reranker).observe(seconds)

    def set_consumer_lag(self, lag_by_partition: Mapping[int, int]) -> None:
        """Replace the lag of every partition: a partition this worker no longer owns disappears."""
        self.consumer_lag.clear()
        for partition, lag in lag_by_partition.items():
            self.consumer_lag.labels(str(partition)).set(lag)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)

    def _distinct_recent(self) -> float:
        cutoff = self._clock() - self._window_s
        stale = list(itertools.takewhile(lambda item: self._last_shown[item] < cutoff, self._last_shown))
        for item in stale:
            del self._last_shown[item]
        return float(len(self._last_shown))
