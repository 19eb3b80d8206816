"""Prometheus metrics of a streamrec worker: definitions, recording helpers and instrumentation.

No Kafka or Faust in here (the worker serves :meth:`Metrics.exposition` on its HTTP endpoint), so the
recommender can be instrumented and tested on its own.
"""

from streams.metrics.instrument import InstrumentedEncoder, ListProbe
from streams.metrics.quality import EXPLORE, exploration_share, intra_list_diversity
from streams.metrics.registry import DEAD_LETTER_REASONS, METRICS_PATH, Metrics
from streams.settings import Settings


def metrics_url(settings: Settings) -> str:
    """Where the worker configured by ``settings`` serves its metrics.

    >>> metrics_url(Settings(web_port=7000))
    'http://127.0.0.1:7000/metrics'
    """
    return f"http://{settings.web_host}:{settings.web_port}{METRICS_PATH}"


__all__ = [
    "DEAD_LETTER_REASONS",
    "EXPLORE",
    "METRICS_PATH",
    "InstrumentedEncoder",
    "ListProbe",
    "Metrics",
    "exploration_share",
    "intra_list_diversity",
    "metrics_url",
]
