"""Online user interest: compact per-user state and the rules that update it from events."""

from streams.interest.multi import MultiInterest, MultiInterestState
from streams.interest.weights import engagement_weight

__all__ = ["MultiInterest", "MultiInterestState", "engagement_weight"]
