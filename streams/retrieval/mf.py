"""Collaborative filtering learned online: River's matrix factorisation as a candidate source and a feature."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from river import optim, reco

F32 = npt.NDArray[np.float32]


class OnlineMF:
    """``river.reco.BiasedMF`` (or ``FunkMF``) on implicit feedback, with numpy item factors for retrieval.

    River keeps factors in per-item dicts, fine for one ``predict_one`` but ~100x slower than one
    matrix-vector product for ranking a catalog, so every learned item's factors and bias are
    copied into a ``[items, k]`` matrix right after River updates them (one row per update).
    Engagements are positives only, so each positive also learns ``negatives`` items drawn
    uniformly from the known ones as ``y = 0``; with the logistic loss the score is then a
    logit of "the user engages with this item".

    Unknown users and items never create River state on read (River's ``predict_one`` would
    insert random factors): they score as if their factors were zero.

    >>> mf = OnlineMF(n_factors=4, negatives=1, seed=0)
    >>> for _ in range(50):
    ...     for user, item in [("u1", "a"), ("u2", "b")]:
    ...         mf.learn_one(user, item, True)
    >>> ids, scores = mf.top_items("u1", 2)
    >>> ids, mf.predict_one("u1", "a") > mf.predict_one("u1", "b"), mf.top_items("nobody", 2)[0]
    (['a', 'b'], True, [])
    """

    def __init__(
        self,
        n_factors: int = 16,
        lr: float = 0.05,
        l2: float = 0.001,
        negatives: int = 4,
        kind: Literal["biased", "funk"] = "biased",
        loss: Literal["log", "squared"] = "log",
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.negatives = negatives
        self.biased = kind == "biased"
        river_loss = optim.losses.Log() if loss == "log" else optim.losses.Squared()
        init = optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed)
        self.model: reco.BiasedMF | reco.FunkMF
        if self.biased:
            self.model = reco.BiasedMF(
                n_factors, bias_optimizer=optim.SGD(lr), latent_optimizer=optim.SGD(lr), loss=river_loss,
                l2_bias=l2, l2_latent=l2, latent_initializer=init, seed=seed,
            )
        else:
            self.model = reco.FunkMF(n_factors, optimizer=optim.SGD(lr), loss=river_loss, l2=l2, initializer=init,
                                     seed=seed)
        self._rng = np.random.default_rng(seed)
        self._ids: list[Hashable] = []
        self._rows: dict[Hashable, int] = {}
        self._factors = np.zeros((0, n_factors), np.float32)
        self._bias = np.zeros(0, np.float32)

    def __len__(self) -> int:
        """Items the model knows."""
        return len(self._ids)

    def _row(self, item: Hashable) -> int:
        row = self._rows.get(item)
        if row is None:
            row = len(self._ids)
            self._rows[item] = row
            self._ids.append(item)
            if row >= len(self._factors):
                cap = max(64, 2 * len(self._factors))
                self._factors = np.concatenate([self._factors, np.zeros((cap - row, self.n_factors), np.float32)])
                self._bias = np.concatenate([self._bias, np.zeros(cap - row, np.float32)])
        return row

    def _learn(self, user: Hashable, item: Hashable, y: float) -> None:
        row = self._row(item)
        model = self.model
        model.learn_one(user, item, y)  # type: ignore[no-untyped-call]  # river is untyped
        self._factors[row] = model.i_latents[item]
        if isinstance(model, reco.BiasedMF):
            self._bias[row] = model.i_biases[item]

    def learn_one(self, user: Hashable, item: Hashable, y: float | bool = 1.0) -> None:
        """Learn one observation; a positive ``y`` also learns ``negatives`` random known items as 0.

        With the logistic loss ``y`` is read as engaged (``> 0``) or not.
        """
        target = float(y)
        if isinstance(self.model.loss, optim.losses.Log):
            target = 1.0 if target > 0 else 0.0
        self._learn(user, item, target)
        if target > 0 and self.negatives > 0 and len(self._ids) > 1:
            for row in self._rng.integers(0, len(self._ids), self.negatives):
                other = self._ids[int(row)]
                if other != item:
                    self._learn(user, other, 0.0)

    def _user(self, user: Hashable) -> tuple[F32, float]:
        """User factors and the per-user constant (global mean + user bias); zeros when unknown."""
        m = self.model
        vec = np.asarray(m.u_latents[user], np.float32) if user in m.u_latents else np.zeros(self.n_factors, np.float32)
        if not self.biased:
            return vec, 0.0
        assert isinstance(m, reco.BiasedMF)
        return vec, float(m.global_mean.get()) + float(m.u_biases.get(user, 0.0))

    def predict_one(self, user: Hashable, item: Hashable) -> float:
        """The model's raw score (a logit with the logistic loss) for ``user`` and ``item``."""
        return float(self.scores(user, [item])[0])

    def scores(self, user: Hashable, item_ids: Sequence[Hashable]) -> F32:
        """Raw scores of ``item_ids`` for ``user`` in one product (a feature for ranking): ``[n]``."""
        vec, const = self._user(user)
        rows = np.fromiter((self._rows.get(i, -1) for i in item_ids), np.int64, len(item_ids))
        known = rows >= 0
        out = np.full(len(item_ids), const, np.float32)
        out[known] += self._factors[rows[known]] @ vec + self._bias[rows[known]]
        return out

    def top_items(self, user: Hashable, n: int, exclude: Iterable[Hashable] = ()) -> tuple[list[Hashable], F32]:
        """The ``n`` best-scoring known items for ``user``, best first (none for an unknown user)."""
        if user not in self.model.u_latents or not self._ids:
            return [], np.zeros(0, np.float32)
        vec, const = self._user(user)
        size = len(self._ids)
        scores = self._factors[:size] @ vec + self._bias[:size] + const
        drop = [r for r in (self._rows.get(i) for i in exclude) if r is not None]
        scores[drop] = -np.inf
        n = min(n, size - len(set(drop)))
        if n <= 0:
            return [], np.zeros(0, np.float32)
        part = np.argpartition(-scores, n - 1)[:n]
        order = part[np.lexsort((part, -scores[part]))]
        return [self._ids[r] for r in order], scores[order].astype(np.float32)
