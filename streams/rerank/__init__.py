"""Rerankers: turn scored candidates into a short, diversified list.

One interface (:class:`Reranker`), one algorithm per module. Later policies (DPP,
calibration, exploration) plug in here without touching the streaming code.
"""

from streams.rerank.base import ListContext, Reranker
from streams.rerank.calibration import Calibrated
from streams.rerank.dpp import DPP
from streams.rerank.mmr import MMR
from streams.rerank.relevance import TopK

__all__ = ["DPP", "MMR", "Calibrated", "ListContext", "Reranker", "TopK"]
