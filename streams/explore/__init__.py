"""Exploration: bandit policies that fill a share of each list with items to learn about.

One interface (:class:`Bandit`), one algorithm per module; :func:`fill_explore` puts a
bandit's picks into an exploit list as ``reason="explore"`` slots.
"""

from streams.explore.base import Bandit
from streams.explore.linucb import LinUCB, interaction_features
from streams.explore.mix import EXPLORE, explore_lists, explore_slots, fill_explore
from streams.explore.thompson import ThompsonSampling

__all__ = [
    "EXPLORE", "Bandit", "LinUCB", "ThompsonSampling", "explore_lists", "explore_slots", "fill_explore",
    "interaction_features",
]
