"""Multi-interest user state: up to ``M`` interest centroids per user, found by online clustering.

One decayed mean averages a user who likes space films and cooking shows into a direction
that matches neither; a few centroids keep both, and the retrieval budget is split across them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# version, dim, centroids, categories, events seen, last event ts
_HEADER = struct.Struct("<BHBBId")
_CENTROID = struct.Struct("<ff")  # int8 scale, weight
_CATEGORY = struct.Struct("<fB")  # weight, name length (the utf-8 name follows)
_VERSION = 2  # 1 was the single-vector state of streamrec 0.1: such a value is refused, not misread
#: 2 plus the interest updates waiting for their item's vector; written only while some wait, so every
#: other state keeps the bytes of version 2
_VERSION_PENDING = 3
_PENDING = struct.Struct("<fdH")  # weight, event ts, item id length (the utf-8 id follows)
_SEP = "\x1f"


def _quantise(vec: F32) -> tuple[npt.NDArray[np.int8], float]:
    """Symmetric int8 with one float32 scale: ~0.5% rms error, cosine to the original > 0.9999 at d=384."""
    peak = float(np.max(np.abs(vec))) if vec.size else 0.0
    scale = np.float32(peak / 127.0)
    if scale == 0.0:  # zero, or so small (a subnormal weight) that its float32 scale underflows: nothing to keep
        return np.zeros(vec.shape, np.int8), 0.0
    return np.clip(np.rint(vec / scale), -127, 127).astype(np.int8), float(scale)


def _unit_rows(mat: F32) -> F32:
    norms = np.sqrt(np.einsum("ij,ij->i", mat, mat))
    norms[norms == 0] = 1.0  # zero rows stay zero
    out: F32 = mat / norms[:, None]
    return out


@dataclass
class MultiInterestState:
    """Centroids (int8 codes x float32 scale), their weights, a decayed category mix, recent history.

    What is held in memory is exactly what :meth:`to_bytes` stores, so a round trip is exact.
    Centroid ``j`` is ``codes[j] * scales[j]``: a decayed, weighted sum of unit item vectors whose
    total weight is ``weights[j]``.

    >>> s = MultiInterestState.empty(3)
    >>> s.codes = np.array([[127, 0, 0]], np.int8); s.scales = np.array([0.5], np.float32)
    >>> s.weights = np.array([2.0], np.float32); s.categories = {"sci-fi": 1.0}; s.history = ["i1"]
    >>> t = MultiInterestState.from_bytes(s.to_bytes())
    >>> t.centroids().tolist(), t.categories, t.history, len(s.to_bytes())
    ([[63.5, 0.0, 0.0]], {'sci-fi': 1.0}, ['i1'], 41)
    """

    dim: int
    codes: npt.NDArray[np.int8]
    scales: F32
    weights: F32
    categories: dict[str, float] = field(default_factory=dict)
    events: int = 0
    last_ts: float = 0.0
    history: list[str] = field(default_factory=list)
    #: ``(item id, weight, event ts)`` of engagements whose item had no vector yet, oldest first
    pending: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def empty(cls, dim: int) -> MultiInterestState:
        return cls(dim, np.zeros((0, dim), np.int8), np.zeros(0, np.float32), np.zeros(0, np.float32))

    @property
    def n_centroids(self) -> int:
        return len(self.weights)

    @property
    def is_cold(self) -> bool:
        """No positive engagement yet (or all of it pruned): no centroid says anything."""
        return self.n_centroids == 0

    def centroids(self) -> F32:
        """The decoded centroid sums, ``[m, dim]`` float32."""
        return self.codes.astype(np.float32) * self.scales[:, None]

    def category_mix(self) -> dict[str, float]:
        """The decayed category weights normalised to sum to 1 (empty when none)."""
        total = sum(self.categories.values())
        return {c: w / total for c, w in self.categories.items()} if total > 0 else {}

    def snapshot(self) -> MultiInterestState:
        """A copy that later updates of this state do not change."""
        return MultiInterestState(
            self.dim, self.codes.copy(), self.scales.copy(), self.weights.copy(), dict(self.categories),
            self.events, self.last_ts, list(self.history), list(self.pending),
        )

    @staticmethod
    def pending_items(raw: bytes) -> list[str]:
        """The items whose vector a serialized state's held interest updates wait for (no full decode
        unless some wait).

        >>> s = MultiInterestState.empty(4); MultiInterestState.pending_items(s.to_bytes())
        []
        >>> s.pending = [("i9", 1.0, 5.0)]; MultiInterestState.pending_items(s.to_bytes())
        ['i9']
        """
        if not raw or raw[0] != _VERSION_PENDING:
            return []
        return [item_id for item_id, _, _ in MultiInterestState.from_bytes(raw).pending]

    def to_bytes(self) -> bytes:
        m = self.n_centroids
        if m > 255 or len(self.categories) > 255:
            raise ValueError("at most 255 centroids and 255 categories")
        version = _VERSION_PENDING if self.pending else _VERSION
        parts = [_HEADER.pack(version, self.dim, m, len(self.categories), self.events, self.last_ts)]
        parts += [_CENTROID.pack(float(s), float(w)) for s, w in zip(self.scales, self.weights, strict=True)]
        parts.append(self.codes.tobytes())
        for name, weight in self.categories.items():
            raw = name.encode("utf-8")
            if len(raw) > 255:  # cut whole characters only, so the name still decodes
                raw = raw[:255].decode("utf-8", "ignore").encode("utf-8")
            parts += [_CATEGORY.pack(weight, len(raw)), raw]
        if self.pending:
            parts.append(struct.pack("<H", len(self.pending)))
            for item_id, weight, ts in self.pending:
                raw = item_id.encode("utf-8")
                parts += [_PENDING.pack(weight, ts, len(raw)), raw]
        parts.append(_SEP.join(self.history).encode("utf-8"))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MultiInterestState:
        version, dim, m, n_cat, events, last_ts = _HEADER.unpack_from(raw)
        if version not in (_VERSION, _VERSION_PENDING):
            raise ValueError(f"unknown multi-interest state version {version}")
        pos = _HEADER.size
        sw = np.frombuffer(raw, dtype="<f4", count=2 * m, offset=pos).reshape(m, 2)
        pos += _CENTROID.size * m
        codes = np.frombuffer(raw, dtype=np.int8, count=m * dim, offset=pos).reshape(m, dim).copy()
        pos += m * dim
        categories = {}
        for _ in range(n_cat):
            weight, length = _CATEGORY.unpack_from(raw, pos)
            pos += _CATEGORY.size
            categories[raw[pos : pos + length].decode("utf-8")] = weight
            pos += length
        pending = []
        if version == _VERSION_PENDING:
            (n_pending,) = struct.unpack_from("<H", raw, pos)
            pos += 2
            for _ in range(n_pending):
                weight, ts, length = _PENDING.unpack_from(raw, pos)
                pos += _PENDING.size
                pending.append((raw[pos : pos + length].decode("utf-8"), weight, ts))
                pos += length
        hist = raw[pos:]
        history = hist.decode("utf-8").split(_SEP) if hist else []
        scales, weights = sw[:, 0].astype(np.float32), sw[:, 1].astype(np.float32)
        return cls(dim, codes, scales, weights, categories, events, last_ts, history, pending)


class MultiInterest:
    """Online clustering of engaged item vectors into at most ``max_interests`` centroids.

    Every positive event first decays all centroid sums, weights and category weights by
    ``g = 0.5 ** (1 / half_life)`` (half-life in the user's positive events, as in
    the single decayed mean of streamrec 0.1), then places the unit item vector ``x``:

    1. nearest centroid ``j`` by cosine; if ``cos(x, c_j) >= tau``: ``c_j += w x``, ``w_j += w``;
    2. else, with a free slot: open a centroid ``c = w x``, weight ``w``;
    3. else (full), the doubling rule of online k-centre clustering: if the two most similar
       centroids are closer to each other than ``x`` is to its nearest, merge them (sums and weights
       add) and open ``x`` in the freed slot; otherwise ``x`` joins its nearest centroid anyway.

    Centroids whose weight decays below ``prune_ratio`` x the heaviest are dropped, so stale
    interests free their slots. The category mix gets ``w / len(categories)`` per item category
    and keeps the ``max_categories`` heaviest. Only the touched centroid is re-quantised per
    event (decay scales the int8 scale, not the codes), so quantisation error does not pile up.

    >>> m = MultiInterest(dim=2, max_interests=2, tau=0.5)
    >>> s = m.new_state()
    >>> for i, v in enumerate([[1, 0], [0, 1], [1, 0.1]]):
    ...     s = m.learn_one(s, f"i{i}", np.array(v, np.float32), 1.0, ts=float(i))
    >>> q, w = m.queries(s)
    >>> q.astype(float).round(2).tolist(), w.astype(float).round(2).tolist()
    ([[1.0, 0.05], [0.0, 1.0]], [0.67, 0.33])
    """

    def __init__(
        self,
        dim: int,
        max_interests: int = 4,
        tau: float = 0.4,
        half_life: float = 50.0,
        history_size: int = 50,
        prune_ratio: float = 0.02,
        max_categories: int = 8,
    ) -> None:
        if not 1 <= max_interests <= 255:
            raise ValueError("max_interests must be in 1..255")
        self.dim = dim
        self.max_interests = max_interests
        self.tau = tau
        self.decay = 0.5 ** (1.0 / half_life)
        self.history_size = history_size
        self.prune_ratio = prune_ratio
        self.max_categories = max_categories

    def new_state(self) -> MultiInterestState:
        return MultiInterestState.empty(self.dim)

    def learn_one(
        self,
        state: MultiInterestState,
        item_id: str,
        item_vec: F32 | None,
        weight: float,
        ts: float,
        categories: tuple[str, ...] | list[str] = (),
    ) -> MultiInterestState:
        """Fold one event into ``state`` (in place) and return it: its interest (when ``item_vec`` is
        given) and its history."""
        if weight > 0.0 and item_vec is not None:
            self.absorb(state, item_vec, weight, categories)
        if item_id in state.history:
            state.history.remove(item_id)
        state.history.append(item_id)
        del state.history[: -self.history_size]
        state.events += 1
        state.last_ts = max(state.last_ts, ts)
        return state

    def absorb(
        self, state: MultiInterestState, item_vec: F32, weight: float, categories: tuple[str, ...] | list[str] = ()
    ) -> None:
        """Move ``state``'s interests (centroids and category mix) towards one engaged item."""
        norm = float(np.linalg.norm(item_vec))
        if norm > 0.0:
            self._place(state, np.asarray(item_vec, np.float32) / norm, weight)
        self._learn_categories(state, categories, weight)

    def _place(self, state: MultiInterestState, x: F32, weight: float) -> None:
        g = np.float32(self.decay)
        state.scales = state.scales * g
        state.weights = state.weights * g
        sums = state.centroids()
        units = _unit_rows(sums)
        sims = units @ x
        j = int(np.argmax(sims)) if len(sims) else -1
        if j >= 0 and sims[j] >= self.tau:
            self._set(state, j, sums[j] + weight * x, float(state.weights[j]) + weight)
        elif state.n_centroids < self.max_interests:
            self._append(state, weight * x, weight)
        else:
            pair = units @ units.T
            np.fill_diagonal(pair, -np.inf)
            a, b = np.unravel_index(int(np.argmax(pair)), pair.shape)
            if pair[a, b] >= sims[j]:
                self._set(state, int(a), sums[a] + sums[b], float(state.weights[a] + state.weights[b]))
                self._set(state, int(b), weight * x, weight)
            else:
                self._set(state, j, sums[j] + weight * x, float(state.weights[j]) + weight)
        keep = state.weights >= self.prune_ratio * float(state.weights.max())
        if not keep.all():
            state.codes, state.scales, state.weights = state.codes[keep], state.scales[keep], state.weights[keep]

    @staticmethod
    def _set(state: MultiInterestState, j: int, vec: F32, weight: float) -> None:
        state.codes[j], scale = _quantise(vec)
        state.scales[j] = scale
        state.weights[j] = weight

    @staticmethod
    def _append(state: MultiInterestState, vec: F32, weight: float) -> None:
        codes, scale = _quantise(vec)
        state.codes = np.vstack([state.codes, codes[None]])
        state.scales = np.append(state.scales, np.float32(scale))
        state.weights = np.append(state.weights, np.float32(weight))

    def _learn_categories(
        self, state: MultiInterestState, categories: tuple[str, ...] | list[str], weight: float
    ) -> None:
        # float32 like the stored form, so an in-memory state equals its round-tripped self
        cats = {c: float(np.float32(v * self.decay)) for c, v in state.categories.items()}
        for c in categories:
            cats[c] = float(np.float32(cats.get(c, 0.0) + weight / len(categories)))
        if len(cats) > self.max_categories:
            cats = dict(sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_categories])
        state.categories = cats

    def queries(self, state: MultiInterestState) -> tuple[F32, F32]:
        """Unit centroid directions ``[m, dim]`` and weights summing to 1, heaviest first.

        ``m`` is 0 for a cold user; split a candidate budget with :func:`split_budget`.
        """
        if state.is_cold:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        order = np.argsort(-state.weights, kind="stable")
        weights = state.weights[order]
        return _unit_rows(state.centroids()[order]), (weights / weights.sum()).astype(np.float32)

    def queries_many(self, states: Sequence[MultiInterestState]) -> list[tuple[F32, F32]]:
        """:meth:`queries` of each state, decoded together (a batch of small states pays numpy's
        per-call cost, not the arithmetic); the same values as one by one."""
        warm = [s for s in states if not s.is_cold]
        offsets = np.cumsum([0] + [s.n_centroids for s in warm])
        picks = [int(start) + i for start, s in zip(offsets.tolist(), warm, strict=False) for i in _heaviest_first(s)]
        if not picks or max(s.n_centroids for s in warm) >= 8:  # see _sums
            return [self.queries(s) for s in states]
        codes = np.concatenate([s.codes for s in warm])[picks]
        scales = np.concatenate([s.scales for s in warm])[picks]
        weights = np.concatenate([s.weights for s in warm])[picks]
        units = _unit_rows(codes.astype(np.float32) * scales[:, None])
        shares = (weights / np.repeat(_sums(weights, offsets), np.diff(offsets))).astype(np.float32)
        spans = iter(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
        out = []
        for s in states:
            if s.is_cold:
                out.append(self.queries(s))
            else:
                lo, hi = next(spans)
                out.append((units[lo:hi], shares[lo:hi]))
        return out

    def query(self, state: MultiInterestState) -> F32:
        """One direction for single-vector callers: the unit sum of all centroids, i.e. the
        decayed mean (zeros for a cold user)."""
        if state.is_cold:
            return np.zeros(self.dim, np.float32)
        total: F32 = state.centroids().sum(axis=0)
        norm = float(np.linalg.norm(total))
        return total / np.float32(norm) if norm > 0 else total


def _heaviest_first(state: MultiInterestState) -> list[int]:
    """The centroids by weight, heaviest first, ties in order (``np.argsort(-w, kind="stable")``)."""
    weights = state.weights.tolist()
    return sorted(range(len(weights)), key=lambda i: -weights[i])


def _sums(values: F32, offsets: npt.NDArray[np.int64]) -> F32:
    """Each ``values[offsets[i]:offsets[i + 1]]``'s float32 sum as ``ndarray.sum`` rounds it: left to
    right below 8 values (numpy sums 8 and more pairwise)."""
    sizes = np.diff(offsets)
    padded = np.zeros((len(sizes), int(sizes.max())), np.float32)
    padded[np.repeat(np.arange(len(sizes)), sizes), np.arange(len(values)) - np.repeat(offsets[:-1], sizes)] = values
    total = np.zeros(len(sizes), np.float32)
    for column in padded.T:  # adding a padding 0 leaves a sum as it is
        total += column
    return total


def split_budget(weights: F32, total: int, floor: int = 1) -> npt.NDArray[np.int64]:
    """Share ``total`` candidates across centroids in proportion to their weights, at least
    ``floor`` each (largest-remainder rounding, so the shares sum to ``total``).

    >>> split_budget(np.array([0.6, 0.3, 0.1], np.float32), 200).tolist()
    [120, 60, 20]
    >>> split_budget(np.array([0.97, 0.02, 0.01], np.float32), 10, floor=2).tolist()
    [6, 2, 2]
    """
    m = len(weights)
    if m == 0:
        return np.zeros(0, np.int64)
    # Python floats for the few centroids a user has: numpy's per-call cost dwarfs the arithmetic,
    # and float64 division rounds the same either way.
    floor = min(floor, total // m)
    whole = max(float(np.sum(weights)), 1e-12)
    ideal = [float(w) / whole * total for w in np.asarray(weights).tolist()]
    out = [max(math.floor(x), floor) for x in ideal]
    diff = total - sum(out)
    if diff > 0:
        for i in sorted(range(m), key=lambda i: out[i] - ideal[i])[:diff]:  # stable: ties keep their order
            out[i] += 1
    for _ in range(-diff):  # floors overshot: take from the largest shares (the first of equals)
        out[max(range(m), key=out.__getitem__)] -= 1
    return np.array(out, np.int64)
