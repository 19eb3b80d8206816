"""Instrumentation around the recommender's parts, so that they need not know about metrics.

:class:`InstrumentedEncoder` implements the interface it wraps, so the worker swaps it in and nothing
else changes; :class:`ListProbe` records what one processed micro-batch published.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from encoders import Encoder
from streams.contracts import Event, Recommendation
from streams.feedback import Reward
from streams.metrics.quality import intra_list_diversity_many
from streams.metrics.registry import Metrics
from streams.recommender import ListTrace
from streams.retrieval import Catalog


class InstrumentedEncoder(Encoder):
    """An :class:`~encoders.Encoder` that records each ``encode`` call as one request of ``kind``."""

    def __init__(self, inner: Encoder, metrics: Metrics, kind: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.kind = kind

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        start = time.perf_counter()
        try:
            vectors = await self.inner.encode(texts)
        except Exception:
            self.metrics.encoder_error(self.kind)
            raise
        self.metrics.encoder_request(self.kind, len(texts), time.perf_counter() - start)
        return vectors

    async def close(self) -> None:
        await self.inner.close()


class ListProbe:
    """Records each published batch: events by type, end-to-end latency, how each list was made (candidate
    pools by source, rerank time, from the recommender's traces), list count and quality."""

    def __init__(self, catalog: Catalog, metrics: Metrics) -> None:
        self.catalog = catalog
        self.metrics = metrics

    def published(
        self,
        events: Sequence[Event],
        produced_at: Sequence[float],
        recs: Sequence[Recommendation],
        traces: Sequence[ListTrace],
        rewards: Sequence[Reward] = (),
        now: float | None = None,
    ) -> None:
        """``events[i]``, whose Kafka record timestamp is ``produced_at[i]``, led to ``recs[i]``, made as
        ``traces[i]`` says; all of them were sent by ``now`` (default: now). ``rewards`` are what the
        batch taught the models: its clicks on shown items count towards CTR."""
        sent = time.time() if now is None else now
        m = self.metrics
        for reward in rewards:
            if reward.reward > 0:
                m.click(reward.policy, reward.arm)
        for event, stamp, trace in zip(events, produced_at, traces, strict=True):
            m.event_consumed(event.type.value)
            m.end_to_end_latency(sent - stamp)
            for source, size in trace.pool.items():
                m.candidates(source, size)
            if trace.pool:  # an empty pool was not reranked
                m.reranked(trace.reranker, trace.rerank_s)
        for rec, ild in zip(recs, self._diversity(recs).tolist(), strict=True):
            m.list_produced(rec.policy, rec.arm, rec.items, None if ild != ild else ild)  # NaN: under 2 items

    def _diversity(self, recs: Sequence[Recommendation]) -> npt.NDArray[np.float64]:
        """Each list's intra-list diversity over its items the catalog knows, all lists at once."""
        sizes = np.fromiter((len(rec.items) for rec in recs), np.int64, len(recs))
        rows = self.catalog.lookup([item.item_id for rec in recs for item in rec.items])
        owner = np.repeat(np.arange(len(recs)), sizes)[rows >= 0]
        rows = rows[rows >= 0]
        counts = np.bincount(owner, minlength=len(recs))
        grid = np.zeros((len(recs), int(counts.max(initial=0))), np.int64)
        grid[owner, np.arange(len(rows)) - (np.cumsum(counts) - counts)[owner]] = rows
        return intra_list_diversity_many(self.catalog.vectors[grid], counts)
