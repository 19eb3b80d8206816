"""Run a real streamrec worker beside real Kafka: used by the demo, the tests and the benchmarks."""

from streams.harness.io import RecommendationCollector, produce, read_records, send_raw
from streams.harness.topics import create_app_topics, run_names
from streams.harness.worker_process import WorkerProcess

__all__ = ["RecommendationCollector", "WorkerProcess", "create_app_topics", "produce", "read_records", "run_names",
           "send_raw"]
