"""Replay evaluation on real data: the production recommender and baselines, scored prequentially.

No Kafka in here except :mod:`streams.evaluate.kafka` (the ``--through-kafka`` mode).
"""

from streams.evaluate.baselines import BASELINES, Baseline, make_baseline
from streams.evaluate.data import catalog_vectors, load_dataset, sample_users
from streams.evaluate.metrics import METRICS, RunMetrics, ScoredList
from streams.evaluate.protocol import Prequential, System, is_positive, next_positives, replay
from streams.evaluate.report import write_outputs
from streams.evaluate.run import Evaluation, prepare, progress_bar, run_evaluation, system_names

__all__ = [
    "BASELINES", "METRICS", "Baseline", "Evaluation", "Prequential", "RunMetrics", "ScoredList", "System",
    "catalog_vectors", "is_positive", "load_dataset", "make_baseline", "next_positives", "prepare",
    "progress_bar", "replay", "run_evaluation", "sample_users", "system_names", "write_outputs",
]
