"""Ranking a list's candidates: the features of each candidate, a listwise ranker learned from what
users engage with next, and the memory of each user's last candidate pool it learns from."""

from streams.ranking.features import FEATURES, candidate_features
from streams.ranking.listwise import ListwiseRanker
from streams.ranking.pools import LastPools

__all__ = ["FEATURES", "LastPools", "ListwiseRanker", "candidate_features"]
