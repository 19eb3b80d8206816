"""LinUCB with one linear model shared by all arms (Li et al., WWW 2010, eq. 4 without per-arm parts)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streams.explore.base import Bandit, Features, Keys

F64 = npt.NDArray[np.float64]
# version, input dim, model dim, refresh_every, updates, alpha, ridge, projection seed
_HEADER = struct.Struct("<BHHIQddq")
_VERSION = 1


def interaction_features(items: Features, user: Features | None = None) -> F64:
    """Per-arm features for a personalised shared model: ``sqrt(d) * item * user`` elementwise.

    ``theta = 1`` then scores the cosine between user and item (for unit vectors), and other
    ``theta`` re-weight the embedding dimensions; without a user the item vectors themselves
    are the features (a global, context-free preference over the embedding space).
    """
    x = np.asarray(items, dtype=np.float64)
    if user is None:
        return x
    return x * (np.asarray(user, dtype=np.float64) * math.sqrt(x.shape[-1]))


class LinUCB(Bandit):
    """Score each offered arm by ``theta . x + alpha * sqrt(x' A^-1 x)`` and keep the ``n`` best.

    ``A = ridge * I + sum x x'`` and ``b = sum r x`` over the rewarded features; ``theta = A^-1 b``.

    *Shared, not disjoint.* Arms are items, most of them never shown: a per-arm model (the
    disjoint variant) knows nothing about an unseen arm and costs one ``d x d`` matrix per
    arm (0.6 M floats at ``d = 384``), while one model over item features scores a new item
    from its embedding and needs one matrix in all. A click on one item moves the score of
    every item near it, which is what exploration over a catalog needs.

    *Cost.* ``A^-1`` is kept up to date with Sherman-Morrison rank-1 updates (``O(d^2)`` per
    reward instead of an ``O(d^3)`` inverse) and re-inverted from ``A`` every
    ``refresh_every`` rewards so rounding cannot accumulate. Scoring ``N`` arms is one
    ``[N, d] x [d, d]`` product. ``project_to = m`` maps the features through a fixed random
    Gaussian matrix (Johnson-Lindenstrauss, regenerated from ``seed``, never stored) to ``m``
    dimensions first, cutting both costs by ``(d / m)^2`` at some loss of resolution.

    River's ``bandit.LinUCBDisjoint`` is the disjoint variant with one Bayesian linear
    regression on dict features per arm: measured ~1.2 ms per arm per pull and ~12 ms per
    update at ``d = 384``, and one context for all arms rather than features per arm.

    Scoring is deterministic (``rng`` is unused); ties keep the offered order.

    >>> bandit = LinUCB(dim=2, alpha=0.1)
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> for _ in range(20):
    ...     bandit.learn_one("a", 0.0, x[0]); bandit.learn_one("b", 1.0, x[1])
    >>> bandit.select(["a", "b"], 1, context=x)
    ['b']
    >>> LinUCB.from_bytes(bandit.to_bytes()).select(["a", "b"], 2, context=x)
    ['b', 'a']
    """

    name = "linucb"
    contextual = True

    def __init__(
        self,
        dim: int,
        alpha: float = 1.0,
        ridge: float = 1.0,
        project_to: int | None = None,
        seed: int = 0,
        refresh_every: int = 1000,
    ) -> None:
        if ridge <= 0:
            raise ValueError("ridge must be positive")
        if project_to is not None and not 0 < project_to <= dim:
            raise ValueError(f"project_to must be in (0, {dim}], got {project_to}")
        self.dim = dim
        self.alpha = alpha
        self.ridge = ridge
        self.project_to = project_to
        self.seed = seed
        self.refresh_every = refresh_every
        m = project_to or dim
        self._proj: F64 | None = None
        if project_to is not None:
            self._proj = np.random.default_rng(seed).normal(size=(dim, m)) / math.sqrt(m)
        self.A: F64 = ridge * np.eye(m)
        self.A_inv: F64 = np.eye(m) / ridge
        self.b: F64 = np.zeros(m)
        self.updates = 0
        self._theta: F64 | None = None

    def _features(self, x: Features) -> F64:
        x64 = np.asarray(x, dtype=np.float64)
        if x64.shape[-1] != self.dim:
            raise ValueError(f"features must have {self.dim} columns, got shape {x64.shape}")
        return x64 @ self._proj if self._proj is not None else x64

    @property
    def theta(self) -> F64:
        if self._theta is None:
            self._theta = self.A_inv @ self.b
        return self._theta

    def scores(self, context: Features) -> F64:
        """The upper confidence bound of each row of ``context`` (``[N, dim]``)."""
        x = self._features(context)
        width: F64 = np.einsum("ij,ij->i", x @ self.A_inv, x)
        ucb: F64 = x @ self.theta + self.alpha * np.sqrt(np.maximum(width, 0.0))
        return ucb

    def select_many(
        self,
        arms: Sequence[Sequence[str]],
        n: Sequence[int],
        contexts: Sequence[Features | None],
        rngs: Sequence[np.random.Generator | None],
        keys: Sequence[Keys] | None = None,
    ) -> list[list[str]]:
        """Every list's arms scored in one product (row by row the same numbers as a list alone)."""
        if any(c is None or len(c) != len(a) for a, c in zip(arms, contexts, strict=True)):
            raise ValueError("LinUCB needs one feature row per offered arm")
        rows = [c for c in contexts if c is not None and len(c)]
        scores = self.scores(np.concatenate(rows)) if rows else np.zeros(0)
        out: list[list[str]] = []
        end = 0
        for offered, want in zip(arms, n, strict=True):
            start, end = end, end + len(offered)
            top = np.argsort(-scores[start:end], kind="stable")[: max(want, 0)].tolist()
            out.append([offered[i] for i in top])
        return out

    def learn_one(self, arm: str, reward: float, context: Features | None = None) -> None:
        if context is None:
            raise ValueError("LinUCB needs the rewarded arm's features")
        x = self._features(context).reshape(-1)
        self.A += np.outer(x, x)
        self.b += reward * x
        self.updates += 1
        if self.refresh_every and self.updates % self.refresh_every == 0:
            self.A_inv = np.linalg.inv(self.A).astype(np.float64, copy=False)
        else:
            ax = self.A_inv @ x  # A^-1 is symmetric, so x' A^-1 = (A^-1 x)'
            self.A_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self._theta = None

    def to_bytes(self) -> bytes:
        """Header, the upper triangle of ``A`` and ``b`` in float64 (``A^-1`` is re-derived on
        load): 0.6 MB at ``d = 384``, 17 KB with ``project_to = 64``."""
        m = len(self.b)
        head = _HEADER.pack(
            _VERSION, self.dim, m if self.project_to else 0, self.refresh_every, self.updates,
            self.alpha, self.ridge, self.seed,
        )
        upper = self.A[np.triu_indices(m)]
        return head + upper.astype("<f8").tobytes() + self.b.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> LinUCB:
        version, dim, proj, refresh, updates, alpha, ridge, seed = _HEADER.unpack_from(raw)
        if version != _VERSION:
            raise ValueError(f"unknown LinUCB state version {version}")
        bandit = cls(dim, alpha, ridge, proj or None, seed, refresh)
        m = len(bandit.b)
        tri = m * (m + 1) // 2
        values = np.frombuffer(raw, dtype="<f8", offset=_HEADER.size, count=tri + m)
        iu = np.triu_indices(m)
        bandit.A[iu] = values[:tri]
        bandit.A.T[iu] = values[:tri]
        bandit.b = values[tri:].astype(np.float64)
        bandit.A_inv = np.linalg.inv(bandit.A).astype(np.float64, copy=False)
        bandit.updates = updates
        return bandit
