"""Beta-Bernoulli Thompson sampling (Thompson 1933; Chapelle & Li, NeurIPS 2011)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

from streams._state import dump_state, load_state
from streams.explore.base import Bandit, Features, Keys

_VERSION = 1


class ThompsonSampling(Bandit):
    """Per arm a ``Beta(alpha0 + s, beta0 + f)`` posterior over its click rate; :meth:`select` draws
    one rate per offered arm and keeps the ``n`` largest draws.

    Arms never rewarded sit at the prior, so new items are tried as often as their prior
    allows. All draws for a list are one vectorised ``rng.beta`` call, so a list is
    deterministic given ``rng``. River's ``bandit.ThompsonSampling`` pulls one arm per call
    from per-arm Python distribution objects with their own seeds; a top-``n`` list from an
    external generator needs the numpy version.

    ``half_life`` (in rewards, over all arms) forgets old evidence: the counts of an arm decay
    by ``0.5 ** (1 / half_life)`` per reward observed anywhere, so a posterior returns to the
    prior when an arm stops being shown and tastes that drift are tracked. The decay is
    applied lazily from each arm's last update, so a reward still costs ``O(1)``.

    >>> ts = ThompsonSampling(alpha0=1.0, beta0=1.0)
    >>> for _ in range(50):
    ...     ts.learn_one("good", 1.0); ts.learn_one("bad", 0.0)
    >>> sorted(ts.select(["bad", "good", "new"], 2, rng=np.random.default_rng(0)))  # unseen beats known-bad
    ['good', 'new']
    >>> ThompsonSampling.from_bytes(ts.to_bytes()).posterior("good")
    (51.0, 1.0)
    """

    name = "thompson"

    def __init__(
        self, alpha0: float = 1.0, beta0: float = 1.0, half_life: float | None = None, seed: int | None = None
    ) -> None:
        if alpha0 <= 0 or beta0 <= 0:
            raise ValueError("alpha0 and beta0 must be positive")
        if half_life is not None and half_life <= 0:
            raise ValueError("half_life must be positive (or None for no decay)")
        self.alpha0 = alpha0
        self.beta0 = beta0
        self.half_life = half_life
        self.seed = seed
        self._rng = np.random.default_rng(seed)  # used only when select() gets no rng
        self._decay = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        self._step = 0  # rewards seen so far: the clock the decay runs on
        self._index: dict[str, int] = {}
        # Success / failure pseudo-counts above the prior, and the step they were last decayed to.
        self._s = np.zeros(16)
        self._f = np.zeros(16)
        self._t = np.zeros(16)
        # Each key's arm row (-1: not looked up yet, or no such arm then), filled as keys are asked for:
        # arms only ever get a row, never lose or change it, so an entry once set stays true.
        self._by_key = np.zeros(0, np.intp)

    def posterior(self, arm: str) -> tuple[float, float]:
        """``(alpha, beta)`` of the arm's Beta posterior now."""
        alpha, beta = self._params([arm])
        return float(alpha[0]), float(beta[0])

    def _rows(self, arms: Sequence[str], keys: Keys | None = None) -> npt.NDArray[np.intp]:
        """Each arm's row (``-1``: unknown): through ``keys`` (see :meth:`Bandit.select_many`) where
        they were seen before, a gather that misses the cache far less than a dict lookup per name."""
        if keys is None:
            return np.fromiter(map(self._index.get, arms, repeat(-1)), dtype=np.intp, count=len(arms))
        if len(keys) and keys.max() >= len(self._by_key):
            grown = np.full(max(int(keys.max()) + 1, 2 * len(self._by_key)), -1, np.intp)
            grown[: len(self._by_key)] = self._by_key
            self._by_key = grown
        rows = self._by_key[keys]
        if len(miss := np.flatnonzero(rows < 0)):
            rows[miss] = self._by_key[keys[miss]] = self._rows([arms[i] for i in miss.tolist()])
        return rows

    def _params(
        self, arms: Sequence[str], keys: Keys | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        idx = self._rows(arms, keys)
        known = idx >= 0
        rows = np.where(known, idx, 0)  # an unknown arm reads row 0, then adds nothing to the prior
        scale = self._decay ** (self._step - self._t[rows]) if self._decay != 1.0 else 1.0
        alpha: npt.NDArray[np.float64] = self.alpha0 + np.where(known, self._s[rows] * scale, 0.0)
        beta: npt.NDArray[np.float64] = self.beta0 + np.where(known, self._f[rows] * scale, 0.0)
        return alpha, beta

    def select_many(
        self,
        arms: Sequence[Sequence[str]],
        n: Sequence[int],
        contexts: Sequence[Features | None],
        rngs: Sequence[np.random.Generator | None],
        keys: Sequence[Keys] | None = None,
    ) -> list[list[str]]:
        """The posteriors of every list's arms looked up at once; then per list one vectorised draw
        from its own ``rng`` (the same numbers as a list alone)."""
        alpha, beta = self._params(
            [arm for offered in arms for arm in offered], None if keys is None else np.concatenate(keys)
        )
        out: list[list[str]] = []
        end = 0
        for offered, want, rng in zip(arms, n, rngs, strict=True):
            start, end = end, end + len(offered)
            if min(want, len(offered)) <= 0:
                out.append([])
                continue
            draws = (rng if rng is not None else self._rng).beta(alpha[start:end], beta[start:end])
            # Negate for a descending order; stable, so ties keep the offered order.
            top = np.argsort(-draws, kind="stable")[:want].tolist()
            out.append([offered[i] for i in top])
        return out

    def learn_one(self, arm: str, reward: float, context: Features | None = None) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        i = self._index.get(arm)
        if i is None:
            i = self._index[arm] = len(self._index)
            if i == len(self._s):
                self._s, self._f, self._t = (np.concatenate([v, np.zeros_like(v)]) for v in (self._s, self._f, self._t))
        self._step += 1
        scale = self._decay ** (self._step - self._t[i])
        self._s[i] = self._s[i] * scale + reward
        self._f[i] = self._f[i] * scale + (1.0 - reward)
        self._t[i] = self._step

    def learn_many(self, arms: Sequence[str], rewards: Sequence[float], context: Features | None = None) -> None:
        """Exactly :meth:`learn_one` in order, vectorised: an arm rewarded at steps ``tau_m`` ends at
        ``s * decay ** (last - t) + sum_m r_m * decay ** (last - tau_m)``."""
        r = np.asarray(rewards, np.float64)
        if len(r) == 0:
            return
        if not ((r >= 0.0) & (r <= 1.0)).all():
            raise ValueError(f"rewards must be in [0, 1], got {r.min()}..{r.max()}")
        index = self._index
        for arm in arms:
            if arm not in index:
                index[arm] = len(index)
        rows = np.fromiter((index[a] for a in arms), np.int64, len(r))
        if len(index) > len(self._s):
            grow = max(len(index), 2 * len(self._s)) - len(self._s)
            self._s, self._f, self._t = (np.concatenate([v, np.zeros(grow)]) for v in (self._s, self._f, self._t))
        steps = self._step + 1.0 + np.arange(len(r))
        last = np.zeros(len(self._s))
        np.maximum.at(last, rows, steps)
        touched = np.unique(rows)
        scale = self._decay ** (last[touched] - self._t[touched])
        self._s[touched] *= scale
        self._f[touched] *= scale
        late = self._decay ** (last[rows] - steps)
        np.add.at(self._s, rows, r * late)
        np.add.at(self._f, rows, (1.0 - r) * late)
        self._t[touched] = last[touched]
        self._step += len(r)

    def to_bytes(self) -> bytes:
        n = len(self._index)
        state = {
            "alpha0": self.alpha0,
            "beta0": self.beta0,
            "half_life": self.half_life,
            "seed": self.seed,
            "step": self._step,
            "arms": list(self._index),  # insertion order = row order
            "s": self._s[:n].tolist(),
            "f": self._f[:n].tolist(),
            "t": self._t[:n].tolist(),
        }
        return dump_state(_VERSION, state)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ThompsonSampling:
        state = load_state(raw, _VERSION, "Thompson")
        ts = cls(state["alpha0"], state["beta0"], state["half_life"], state["seed"])
        ts._step = state["step"]
        ts._index = {a: i for i, a in enumerate(state["arms"])}
        size = max(16, len(ts._index))
        for name in ("s", "f", "t"):
            v = np.zeros(size)
            v[: len(ts._index)] = state[name]
            setattr(ts, "_" + name, v)
        return ts
