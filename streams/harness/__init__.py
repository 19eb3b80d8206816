"""Run a real streamrec worker beside real Kafka: used by the demo, the tests and the benchmarks."""

from streams.harness.io import RecommendationCollector, produce
from streams.harness.worker_process import WorkerProcess, create_worker_topics

__all__ = ["RecommendationCollector", "WorkerProcess", "create_worker_topics", "produce"]
