"""Collaborative filtering learned online: matrix factorisation as a candidate source and a feature."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from streams.retrieval.ragged import flatten

F32 = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]


class OnlineMF:
    """Biased (or Funk) matrix factorisation on implicit feedback, learned online by SGD, in numpy.

    The model, loss and per-sample update are River's ``reco.BiasedMF`` / ``reco.FunkMF`` (global
    mean + user bias + item bias + dot product; SGD with L2 on biases and latents; latents drawn
    from ``Normal(0, 0.1)`` when first seen), but the parameters are matrices indexed by row (items
    by catalog row, users by first appearance), so scoring a batch against the catalog is one
    matrix product and :meth:`learn_many` updates a micro-batch with a few gathers and scatters
    instead of one River call per sample. A batch's samples are computed from the parameters at
    its start and their updates added (stale gradients); a batch of one sample is River's
    ``learn_one`` exactly (a test checks it).

    Engagements are positives only, so each positive also learns ``negatives`` items drawn
    uniformly from the known ones as ``y = 0``; with the logistic loss the score is then a logit
    of "the user engages with this item". Unknown users score as if their factors were zero;
    only items learned at least once are candidates.

    >>> mf = OnlineMF(n_factors=4, negatives=1, seed=0)
    >>> for _ in range(50):
    ...     mf.learn_many(["u1", "u2"], np.array([0, 1]))
    >>> rows, scores = mf.top_items(["u1", "nobody"], 2)
    >>> rows.tolist(), bool(mf.scores(["u1"], np.array([[0, 1]]))[0, 0] > 0)
    ([[0, 1], [-1, -1]], True)
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
        self.lr = lr
        self.l2 = l2
        self.negatives = negatives
        self.biased = kind == "biased"
        self.logistic = loss == "log"
        self._rng = np.random.default_rng(seed)
        self._users: dict[str, int] = {}
        self._u = np.zeros((0, n_factors), np.float32)
        self._ub = np.zeros(0, np.float32)
        self._v = np.zeros((0, n_factors), np.float32)
        self._ib = np.zeros(0, np.float32)
        self._known = np.zeros(0, bool)
        self._known_rows: list[int] = []
        self._mean_n = 0
        self._mean = 0.0

    def __len__(self) -> int:
        """Items the model knows."""
        return len(self._known_rows)

    @property
    def global_mean(self) -> float:
        return self._mean if self.biased else 0.0

    def _user_rows(self, users: Sequence[str], create: bool) -> Rows:
        rows = np.fromiter((self._users.get(u, -1) for u in users), np.int64, len(users))
        if create and (rows < 0).any():
            old = len(self._users)
            for i in np.flatnonzero(rows < 0).tolist():
                row = self._users.get(users[i])
                if row is None:
                    row = self._users[users[i]] = len(self._users)
                rows[i] = row
            need = len(self._users)
            if need > len(self._u):
                cap = max(need, 2 * len(self._u), 64)
                self._u = np.vstack([self._u, np.zeros((cap - len(self._u), self.n_factors), np.float32)])
                self._ub = np.concatenate([self._ub, np.zeros(cap - len(self._ub), np.float32)])
            self._u[old:need] = self._rng.normal(0.0, 0.1, (need - old, self.n_factors))
        return rows

    def _item_rows(self, items: Rows) -> None:
        need = int(items.max()) + 1 if len(items) else 0
        if need > len(self._v):
            cap = max(need, 2 * len(self._v), 64)
            self._v = np.vstack([self._v, np.zeros((cap - len(self._v), self.n_factors), np.float32)])
            self._ib = np.concatenate([self._ib, np.zeros(cap - len(self._ib), np.float32)])
            self._known = np.concatenate([self._known, np.zeros(cap - len(self._known), bool)])
        new = np.unique(items[~self._known[items]])
        if len(new):
            self._v[new] = self._rng.normal(0.0, 0.1, (len(new), self.n_factors))
            self._known[new] = True
            self._known_rows.extend(new.tolist())

    def state(self, n_rows: int) -> dict[str, npt.NDArray[np.generic]]:
        """Users (ids in row order) and their factors, item factors of rows ``0 .. n_rows - 1``, the
        running mean and the random generator's state, as arrays."""
        n_users, pad = len(self._users), max(0, n_rows - len(self._v))
        return {
            "users": np.array(list(self._users), np.str_) if n_users else np.zeros(0, "<U1"),
            "u": self._u[:n_users], "ub": self._ub[:n_users],
            "v": np.pad(self._v[:n_rows], ((0, pad), (0, 0))), "ib": np.pad(self._ib[:n_rows], (0, pad)),
            "known": np.pad(self._known[:n_rows], (0, pad)),
            "known_rows": np.array(self._known_rows, np.int64),
            "mean": np.array([self._mean_n, self._mean], np.float64),
            "rng": np.frombuffer(json.dumps(self._rng.bit_generator.state).encode(), np.uint8),
        }

    def load_state(self, state: Mapping[str, npt.NDArray[np.generic]], remap: Rows | None, n_rows: int) -> None:
        """Take the factors of :meth:`state` (``remap`` as :meth:`CoVisitation.load_state`)."""
        users = np.asarray(state["users"]).tolist()
        self._users = {u: i for i, u in enumerate(users)}
        self._u, self._ub = np.array(state["u"], np.float32), np.array(state["ub"], np.float32)
        v, ib, known = np.asarray(state["v"]), np.asarray(state["ib"]), np.asarray(state["known"], bool)
        known_rows = np.asarray(state["known_rows"], np.int64)
        target = np.arange(len(v))
        if remap is not None:
            ok = remap >= 0
            v, ib, known, target = v[ok], ib[ok], known[ok], remap[ok]
            known_rows = remap[known_rows]
            known_rows = known_rows[known_rows >= 0]
        size = max(n_rows, int(target.max()) + 1 if len(target) else 0)
        self._v, self._ib = np.zeros((size, self.n_factors), np.float32), np.zeros(size, np.float32)
        self._known = np.zeros(size, bool)
        self._v[target], self._ib[target], self._known[target] = v, ib, known
        self._known_rows = known_rows.tolist()
        mean = np.asarray(state["mean"], np.float64)
        self._mean_n, self._mean = int(mean[0]), float(mean[1])
        self._rng.bit_generator.state = json.loads(np.asarray(state["rng"], np.uint8).tobytes())

    def learn_many(self, users: Sequence[str], items: Rows, y: npt.ArrayLike = 1.0) -> None:
        """Learn ``(users[i], items[i], y[i])``; each positive also learns ``negatives`` random known items as 0.

        With the logistic loss ``y`` is read as engaged (``> 0``) or not.
        """
        if len(users) == 0:
            return
        target = np.broadcast_to(np.asarray(y, np.float32), (len(users),)).astype(np.float32)
        if self.logistic:
            target = (target > 0).astype(np.float32)
        self._item_rows(items)
        u = self._user_rows(users, create=True)
        pos = np.flatnonzero(target > 0)
        if self.negatives > 0 and len(pos) and len(self._known_rows) > 1:
            known = np.asarray(self._known_rows, np.int64)
            drawn = known[self._rng.integers(0, len(known), (len(pos), self.negatives))]
            keep = drawn != items[pos][:, None]  # River's loop skipped a draw of the item itself
            u = np.concatenate([u, np.repeat(u[pos], self.negatives)[keep.ravel()]])
            items = np.concatenate([items, drawn.ravel()[keep.ravel()]])
            target = np.concatenate([target, np.zeros(int(keep.sum()), np.float32)])
        self._step(u, items, target)

    def _step(self, u: Rows, i: Rows, y: F32) -> None:
        if self.biased:
            # River updates its running mean before each prediction; a batch adds all its targets first.
            self._mean_n += len(y)
            self._mean += (float(y.sum()) - len(y) * self._mean) / self._mean_n
        uv, iv = self._u[u], self._v[i]
        pred = np.einsum("ij,ij->i", uv, iv)
        if self.biased:
            pred += self._mean + self._ub[u] + self._ib[i]
        g = (1.0 / (1.0 + np.exp(-np.clip(pred, -30, 30))) - y) if self.logistic else 2.0 * (pred - y)
        lr, l2 = np.float32(self.lr), np.float32(self.l2)
        if self.biased:
            np.add.at(self._ub, u, -lr * (g + l2 * self._ub[u]))
            np.add.at(self._ib, i, -lr * (g + l2 * self._ib[i]))
        np.add.at(self._u, u, -lr * (g[:, None] * iv + l2 * uv))
        np.add.at(self._v, i, -lr * (g[:, None] * uv + l2 * iv))

    def _user_terms(self, users: Sequence[str]) -> tuple[F32, F32, npt.NDArray[np.bool_]]:
        """Per user: factors (zeros when unknown), the constant (global mean + bias), known or not."""
        rows = self._user_rows(users, create=False)
        known = rows >= 0
        vecs = np.zeros((len(users), self.n_factors), np.float32)
        vecs[known] = self._u[rows[known]]
        const = np.full(len(users), self.global_mean, np.float32)
        if self.biased:
            const[known] += self._ub[rows[known]]
        return vecs, const, known

    def scores(self, users: Sequence[str], rows: Rows) -> F32:
        """Raw scores (a logit with the logistic loss) of ``rows`` ``[B, P]`` (``-1`` padding) for each of
        ``users``: ``[B, P]``. Items never learned score the user's constant."""
        vecs, const, _ = self._user_terms(users)
        safe = np.where((rows >= 0) & (rows < len(self._v)), rows, 0)
        known = (rows >= 0) & (rows < len(self._known)) & self._known[safe] if len(self._known) else rows < -1
        # np.take of the [B, P, k] factors: a fancy index with a 2-d array costs several times more
        item = np.einsum("bpk,bk->bp", np.take(self._v, safe, axis=0), vecs) + self._ib[safe] if len(self._v) else 0.0
        out: F32 = np.where(known, item, 0.0).astype(np.float32) + const[:, None]
        return out

    def top_items(self, users: Sequence[str], n: int, exclude: Sequence[Rows] = ()) -> tuple[Rows, F32]:
        """Per user the ``n`` best-scoring known items (``exclude[i]`` left out), best first, ``-1``
        padded (all padding for an unknown user): two ``[B, n]`` arrays."""
        vecs, const, known_user = self._user_terms(users)
        rows = np.full((len(users), n), -1, np.int64)
        out = np.zeros((len(users), n), np.float32)
        size = len(self._known)
        if not known_user.any() or n <= 0 or not self._known_rows:
            return rows, out
        who = np.flatnonzero(known_user)
        # Only known items compete: their columns of the product (ascending, so a column's order is
        # its row's for the ties), which leaves a far smaller partition.
        items = np.flatnonzero(self._known)
        scores = (vecs[who] @ self._v[:size].T)[:, items] + self._ib[items] + const[who, None]
        user, ex = flatten(exclude[: len(users)])
        col = np.minimum(np.searchsorted(items, ex), len(items) - 1)
        hit = (items[col] == ex) & known_user[user]
        scores[np.searchsorted(who, user[hit]), col[hit]] = -np.inf
        m = min(n, len(items))
        everything = np.broadcast_to(np.arange(m), (len(who), m))
        part = np.argpartition(-scores, m - 1, axis=1)[:, :m] if m < len(items) else everything
        top = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -top), axis=1)
        part, top = items[np.take_along_axis(part, order, axis=1)], np.take_along_axis(top, order, axis=1)
        ok = np.isfinite(top)
        rows[who, :m] = np.where(ok, part, -1)
        out[who, :m] = np.where(ok, top, 0.0)
        return rows, out
