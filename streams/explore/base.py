"""The bandit interface shared by the exploration policies."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

Features = npt.NDArray[np.floating[Any]]
Keys = npt.NDArray[np.int64]
B = TypeVar("B", bound="Bandit")


class Bandit(abc.ABC):
    """Chooses ``n`` of the offered arms and learns from the reward of each shown arm.

    An arm is any string the caller picks: an item id, or a category (then the caller maps the
    chosen category to an item). ``context`` is what contextual policies score: for
    :meth:`select` one feature row per offered arm (``[len(arms), d]``), for :meth:`learn_one`
    the row of the rewarded arm (``[d]``). Context-free policies ignore it.

    State is checkpointed with :meth:`to_bytes` / :meth:`from_bytes`, so a worker can keep it in
    a changelogged table and a replay restarts from the same model.
    """

    name: str = "bandit"
    #: Whether :meth:`select` and :meth:`learn_one` read ``context`` (callers skip building it otherwise).
    contextual: bool = False

    def select(
        self,
        arms: Sequence[str],
        n: int,
        context: Features | None = None,
        rng: np.random.Generator | None = None,
    ) -> list[str]:
        """``min(n, len(arms))`` distinct arms, best first. ``arms`` must be distinct."""
        return self.select_many([arms], [n], [context], [rng])[0]

    @abc.abstractmethod
    def select_many(
        self,
        arms: Sequence[Sequence[str]],
        n: Sequence[int],
        contexts: Sequence[Features | None],
        rngs: Sequence[np.random.Generator | None],
        keys: Sequence[Keys] | None = None,
    ) -> list[list[str]]:
        """:meth:`select` for each list ``i`` (``arms[i]``, ``n[i]``, ``contexts[i]``, ``rngs[i]``), in order,
        the lists sharing the work (the same picks come out as list by list).

        ``keys[i]``, when given, holds a stable integer per arm of ``arms[i]`` (a catalog row: one key is
        always the same arm, for the bandit's life), which a policy may look arms up by instead of by name.
        """

    @abc.abstractmethod
    def learn_one(self, arm: str, reward: float, context: Features | None = None) -> None:
        """Fold one observed reward (in ``[0, 1]`` for Bernoulli policies) into the model."""

    def learn_many(self, arms: Sequence[str], rewards: Sequence[float], context: Features | None = None) -> None:
        """:meth:`learn_one` for each ``(arms[i], rewards[i])`` in order (``context`` row ``i`` each)."""
        for i, (arm, reward) in enumerate(zip(arms, rewards, strict=True)):
            self.learn_one(arm, reward, None if context is None else context[i])

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """The whole state, parameters included."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls: type[B], raw: bytes) -> B:
        """The bandit :meth:`to_bytes` wrote."""
