"""Ranking a list's candidates: the features of each candidate, a listwise ranker learned from what
users engage with next, the memory of each user's last candidate pool it learns from, and how often
each item is taken from such pools."""

from streams.ranking.features import FEATURES, candidate_features
from streams.ranking.listwise import ListwiseRanker
from streams.ranking.pools import LastPools
from streams.ranking.take_rates import TakeRates

__all__ = ["FEATURES", "LastPools", "ListwiseRanker", "TakeRates", "candidate_features"]
