"""Feedback: which shown slots were engaged with, as rewards for the bandits and labels for
the relevance model."""

from streams.feedback.attribution import FeedbackJoiner, Reward

__all__ = ["FeedbackJoiner", "Reward"]
