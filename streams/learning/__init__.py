"""The shared models apart from serving: what a batch teaches them, how they learn it, and their snapshots.

A serving worker makes lists from the shared models (popularity, co-visitation, MF, the ranker, the
bandit) and writes down what each batch teaches them as :class:`Lessons`; whoever learns (the same
process, or a learner reading every worker's lessons from Kafka) folds them into :class:`SharedModels`,
whose :func:`~streams.learning.snapshot.encode` bytes are what serving workers load and swap in.
"""

from streams.learning.lessons import Lessons
from streams.learning.models import SharedModels

__all__ = ["Lessons", "SharedModels"]
