"""Online user interest: compact per-user state and the rules that update it from events."""

from streams.interest.decayed_mean import DecayedMeanInterest, engagement_weight
from streams.interest.state import UserState

__all__ = ["DecayedMeanInterest", "UserState", "engagement_weight"]
