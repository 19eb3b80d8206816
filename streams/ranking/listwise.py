"""A linear ranker learned online from the stream's own next engagements, listwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class ListwiseRanker:
    """Scores ``X @ w`` of a list's candidates; learns ``w`` from which candidate the user engaged with next.

    Each lesson is one list: the candidates the user was offered and the one they took next. The loss
    is the softmax cross-entropy of the taken one over the list (ListNet with a single relevant
    item), so the ranker learns to order the candidates retrieval actually offers, against each
    other, rather than a click probability learned from the few slots that were shown. AdaGrad gives
    each feature its own step size; a batch's lists are learned from the weights before the batch.

    ``prior`` names the starting weights, so a new worker ranks sensibly before its first lesson.

    >>> r = ListwiseRanker(["good", "noise"], prior={"noise": 0.5}, lr=0.5)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(50):
    ...     X = rng.random((8, 5, 2)).astype(np.float32)  # 8 lists of 5 candidates
    ...     r.learn_many(X, np.ones((8, 5), bool), X[..., 0].argmax(axis=1))
    >>> bool(r.weights["good"] > 1.0 > abs(r.weights["noise"]))
    True
    """

    def __init__(self, features: Sequence[str], prior: Mapping[str, float] | None = None, lr: float = 0.2) -> None:
        self.features = tuple(features)
        self.lr = lr
        self.w = np.zeros(len(self.features), np.float64)
        for name, value in (prior or {}).items():
            self.w[self.features.index(name)] = value
        self._g2 = np.zeros(len(self.features), np.float64)  # AdaGrad's sum of squared gradients
        #: Lists learned from so far.
        self.lessons = 0

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """The weights, AdaGrad's sums and the lesson count, as arrays."""
        return {"w": self.w.copy(), "g2": self._g2.copy(), "lessons": np.array([self.lessons], np.int64)}

    def load_state(self, state: Mapping[str, npt.NDArray[np.generic]]) -> None:
        if len(state["w"]) != len(self.features):
            raise ValueError(f"ranker state has {len(state['w'])} weights, this ranker {len(self.features)} features")
        self.w, self._g2 = np.array(state["w"], np.float64), np.array(state["g2"], np.float64)
        self.lessons = int(np.asarray(state["lessons"])[0])

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.features, self.w.tolist(), strict=True))

    def score(self, X: F32) -> F32:
        """``[..., F]`` features to ``[...]`` scores (log-odds of being taken, up to a per-list constant)."""
        out: F32 = X @ self.w.astype(np.float32)
        return out

    def learn_many(self, X: F32, valid: npt.NDArray[np.bool_], taken: npt.NDArray[np.intp]) -> None:
        """Learn lists ``X`` ``[G, P, F]`` (candidates where ``valid``), list ``g`` having had candidate
        ``taken[g]`` engaged with."""
        if not len(X):
            return
        x = X.astype(np.float64)
        s = np.where(valid, x @ self.w, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grads = np.einsum("gp,gpf->gf", p, x) - x[np.arange(len(x)), taken]  # d(-log p_taken)/dw per list
        self._g2 += np.einsum("gf,gf->f", grads, grads)
        self.w -= self.lr * grads.sum(axis=0) / np.sqrt(self._g2 + 1e-8)
        self.lessons += len(x)
