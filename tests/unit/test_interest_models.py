"""Multi-interest state, co-visitation and online MF: do they learn what they claim?"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.interest.multi import MultiInterest, MultiInterestState, split_budget
from streams.retrieval.covisit import CoScores, CoVisitation
from streams.retrieval.mf import OnlineMF

F32 = npt.NDArray[np.float32]
DIM = 384
# M=4 at d=384 with int8 centroids: 17 header + 4 x (8 + 384) + categories + history.
# 8 categories of <= 10 chars and 50 ids of <= 9 chars stay under this.
STATE_BUDGET_M4 = 17 + 4 * 392 + 8 * 15 + 50 * 10


def _unit(x: F32) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _cluster_items(rng: np.random.Generator, centre: F32, n: int, spread: float = 1.0) -> F32:
    """Unit vectors around ``centre`` (cosine ~0.7 for spread 1 at high dimension)."""
    noise = rng.normal(size=(n, len(centre))).astype(np.float32)
    return _unit(centre + spread * _unit(noise))


# --- multi-interest -----------------------------------------------------------------------------


def test_two_separated_interests_get_a_centroid_each() -> None:
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(2, DIM)).astype(np.float32))
    space, cooking = _cluster_items(rng, centres[0], 40), _cluster_items(rng, centres[1], 40)
    model = MultiInterest(DIM)
    state = model.new_state()
    for i in range(40):
        state = model.learn_one(state, f"s{i}", space[i], 1.0, ts=2.0 * i, categories=("space",))
        state = model.learn_one(state, f"c{i}", cooking[i], 1.0, ts=2.0 * i + 1, categories=("cooking",))
    queries, weights = model.queries(state)
    assert state.n_centroids >= 2
    assert queries.shape == (state.n_centroids, DIM)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert weights.sum() == pytest.approx(1.0)
    # each cluster has a query close to it; the single decayed mean would sit between them (~0.7)
    best = (queries @ centres.T).max(axis=0)
    assert (best > 0.9).all(), best
    assert float(_unit(model.query(state)) @ centres[0]) < 0.8
    # both interests get a real share of the candidate budget
    top_two = np.sort(weights)[::-1][:2]
    assert top_two[1] > 0.3 * top_two[0]
    assert split_budget(weights, 200).sum() == 200
    assert set(state.category_mix()) == {"space", "cooking"}


@settings(max_examples=30, deadline=None)
@given(max_interests=st.integers(1, 4), n_clusters=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_centroids_never_exceed_max_interests(max_interests: int, n_clusters: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = 32
    centres = _unit(rng.normal(size=(n_clusters, dim)).astype(np.float32))
    model = MultiInterest(dim, max_interests=max_interests)
    state = model.new_state()
    for i in range(60):
        vec = _cluster_items(rng, centres[rng.integers(n_clusters)], 1, spread=0.5)[0]
        state = model.learn_one(state, f"i{i}", vec, float(rng.uniform(0.1, 3.0)), ts=float(i))
        assert 1 <= state.n_centroids <= max_interests
    assert model.queries(state)[0].shape[0] == state.n_centroids


@settings(max_examples=30, deadline=None)
@given(max_interests=st.integers(1, 9), users=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_queries_of_a_batch_are_those_one_by_one(max_interests: int, users: int, seed: int) -> None:
    """queries_many (the batched decode the recommender serves with) gives each state's queries bit for
    bit: cold users, ties between weights, and as many centroids as allowed."""
    rng = np.random.default_rng(seed)
    model = MultiInterest(16, max_interests=max_interests)
    states = []
    for u in range(users):
        state = model.new_state()
        for i in range(int(rng.integers(0, 40))):
            vec = rng.normal(size=16).astype(np.float32)
            model.learn_one(state, f"i{i}", vec, float(rng.choice([0.0, 0.3, 1.0, 2.0])), ts=float(i))
        if u % 3 == 0 and state.n_centroids > 1:
            state.weights[:] = state.weights[0]
        states.append(state)
    for state, (queries, weights) in zip(states, model.queries_many(states), strict=True):
        one_queries, one_weights = model.queries(state)
        assert queries.dtype == one_queries.dtype and weights.dtype == one_weights.dtype
        assert np.array_equal(queries, one_queries) and np.array_equal(weights, one_weights)


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x1f"), min_size=1, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(
        st.tuples(_names, st.floats(0.0, 3.0), st.lists(_names, max_size=3), st.integers(0, 2**31)),
        max_size=30,
    ),
    max_interests=st.integers(1, 4),
)
def test_state_bytes_round_trip_exactly(
    events: list[tuple[str, float, list[str], int]], max_interests: int
) -> None:
    dim = 16
    model = MultiInterest(dim, max_interests=max_interests, history_size=10)
    state = model.new_state()
    for n, (item, weight, cats, seed) in enumerate(events):
        vec = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
        state = model.learn_one(state, item, vec, weight, ts=float(n), categories=cats)
        raw = state.to_bytes()
        back = MultiInterestState.from_bytes(raw)
        assert back.to_bytes() == raw
        assert np.array_equal(back.codes, state.codes)
        assert np.array_equal(back.scales, state.scales)
        assert np.array_equal(back.weights, state.weights)
        assert (back.categories, back.history, back.events, back.last_ts) == (
            state.categories, state.history, state.events, state.last_ts,
        )
        state = back  # learning on from the decoded state is what the changelog does
    assert len(state.history) <= 10


def test_state_size_for_four_interests_at_384_dims() -> None:
    rng = np.random.default_rng(1)
    model = MultiInterest(DIM, max_interests=4, tau=0.99)  # tau ~1: every item opens or merges
    state = model.new_state()
    for i in range(200):
        vec = rng.normal(size=DIM).astype(np.float32)
        state = model.learn_one(state, f"item{i:05d}", vec, 1.0, ts=float(i), categories=(f"genre{i % 12}",))
    assert state.n_centroids == 4 and len(state.categories) == 8 and len(state.history) == 50
    size = len(state.to_bytes())
    assert size <= STATE_BUDGET_M4
    state.history = []
    assert len(state.to_bytes()) == 1673  # 17 + 4 x 392 + 8 categories ("genreN", 11-12 B each)


def test_an_engagement_too_small_for_float32_leaves_no_garbage_in_the_state() -> None:
    """A weight so small that its int8 scale underflows in float32 (hypothesis found 0 < w < 1e-43) used to
    divide by zero and cast NaN to int8; it now counts as nothing."""
    model = MultiInterest(8)
    state = model.new_state()
    with np.errstate(divide="raise", invalid="raise"):
        model.learn_one(state, "a", np.ones(8, np.float32) / np.sqrt(8), 1e-44, ts=1.0)
    assert not state.codes.any() and not np.isnan(state.scales).any()


def test_bad_version_is_refused() -> None:
    raw = bytearray(MultiInterestState.empty(4).to_bytes())
    raw[0] = 99
    with pytest.raises(ValueError, match="version"):
        MultiInterestState.from_bytes(bytes(raw))


# --- co-visitation --------------------------------------------------------------------------------


class _Rows(dict[str, int]):
    """Item ids to dense rows, as the catalog gives them."""

    def __missing__(self, key: str) -> int:
        self[key] = len(self)
        return self[key]

    def of(self, ids: list[str]) -> np.ndarray:
        return np.array([self[i] for i in ids], np.int64)

    def ids(self, rows: np.ndarray) -> list[str]:
        names = {v: k for k, v in self.items()}
        return [names[int(r)] for r in rows]


def test_co_engaged_items_become_neighbours() -> None:
    rng = np.random.default_rng(0)
    groups = [[f"g{g}_{i}" for i in range(8)] for g in range(3)]
    noise = [f"n{i}" for i in range(500)]
    rows = _Rows()
    cv = CoVisitation(max_neighbours=10, window=5)
    for _ in range(300):
        group = groups[rng.integers(3)]
        history: list[str] = []
        for _ in range(6):
            item = group[rng.integers(8)] if rng.random() < 0.8 else noise[rng.integers(500)]
            cv.update(rows.of(history), rows[item])
            history.append(item)
    found, scores = cv.neighbours(rows.of(["g0_0"]), 5)
    ids = rows.ids(found)
    assert len(ids) == 5 and all(str(i).startswith("g0_") for i in ids)
    assert (np.diff(scores) <= 0).all()
    s = cv.score(rows.of(["g1_0", "g1_1"]), rows.of(["g1_2", "g0_2", "unknown"]))
    assert s[0] > 5 * s[1] and s[2] == 0.0
    # a noise item met next to hundreds of others keeps a bounded table
    assert max(cv.n_neighbours(rows[i]) for i in groups[0] + noise) <= 20


def test_neighbour_tables_stay_bounded() -> None:
    rows = _Rows()
    cv = CoVisitation(max_neighbours=5)
    for i in range(1000):
        cv.update(rows.of(["hub", "hub"]), rows[f"x{i}"])
        cv.update(rows.of(["hub"]), rows["x0"])  # one steady neighbour must survive the churn
    assert cv.n_neighbours(rows["hub"]) <= 10
    assert rows.ids(cv.neighbours(rows.of(["hub"]), 1)[0]) == ["x0"]


def test_batched_update_equals_one_by_one() -> None:
    """Small tables (rows fill up and are cut mid-batch) and a short half-life: a batch is its events in order."""
    rng = np.random.default_rng(5)
    one, batched = CoVisitation(max_neighbours=3, window=4, half_life=30.0), CoVisitation(3, 4, 30.0)
    recent = [rng.integers(0, 40, rng.integers(0, 6)) for _ in range(300)]
    items, weights = rng.integers(0, 40, 300), rng.choice([0.0, 0.5, 1.0], 300)
    for r, i, w in zip(recent, items, weights, strict=True):
        one.update(r, int(i), float(w))
    for start in range(0, 300, 50):
        batched.update_many(recent[start : start + 50], items[start : start + 50], weights[start : start + 50])
    for r in recent[:40]:
        a, b = one.neighbours(r, 20, 40), batched.neighbours(r, 20, 40)
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])


def test_a_large_catalog_whose_recent_rows_have_no_neighbour_yet_scores_nothing() -> None:
    # above the dense limit (events x rows) the pairs are sorted; a batch with none of them must work
    cv = CoVisitation(max_neighbours=3)
    cv.update(np.array([1]), 2)  # rows exist up to the table's capacity; row 50 has no neighbour
    co = cv.accumulate([np.array([50])] * 5, 1_000_000)
    rows, scores = co.top(3, [np.zeros(0, np.int64)] * 5)
    assert (rows == -1).all() and (scores == 0).all()


@pytest.mark.parametrize("n", [1, 4, 30])
def test_top_is_a_full_sort_by_score_then_row_in_both_forms(n: int) -> None:
    """Scores on a coarse grid tie a lot; the n-th best often ties with more than fit."""
    rng = np.random.default_rng(n)
    block = rng.integers(0, 4, (6, 50)) * (rng.random((6, 50)) < 0.5) * 0.25
    block[4] = 0.0  # an event with nothing
    exclude = [rng.integers(-2, 55, rng.integers(0, 8)) for _ in range(5)]  # out-of-range rows, one event short
    keys = np.flatnonzero(block)
    for co in (CoScores.dense(block), CoScores(6, 50, keys, block.ravel()[keys])):
        rows, scores = co.top(n, exclude)
        for b in range(6):
            ok = [r for r in range(50) if block[b, r] > 0 and (b >= len(exclude) or r not in exclude[b])]
            want = sorted(ok, key=lambda r: (-block[b, r], r))[:n]
            assert rows[b].tolist() == want + [-1] * (n - len(want))
            assert scores[b].tolist() == [block[b, r] for r in want] + [0.0] * (n - len(want))
        beyond = co.top(n, [*exclude, np.zeros(0, np.int64), np.array([0])])  # a list for an event not in the batch
        assert beyond[0].tolist() == rows.tolist()


# --- online matrix factorisation ------------------------------------------------------------------


def test_mf_learns_a_low_rank_preference() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, rank, per_user = 200, 300, 3, 30
    users, items = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    logits = 2.0 * users @ items.T
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    stream: list[tuple[str, int]] = []
    held_out: dict[str, tuple[int, list[int]]] = {}
    for u in range(n_users):
        picks = rng.choice(n_items, per_user + 1, replace=False, p=prob[u])
        stream += [(f"u{u}", int(i)) for i in picks[:per_user]]
        held_out[f"u{u}"] = (int(picks[-1]), [int(i) for i in picks[:per_user]])
    order = rng.permutation(len(stream))
    mf = OnlineMF(n_factors=8, lr=0.3, negatives=4, seed=1)
    for j in order:
        user, item = stream[j]
        mf.learn_many([user], np.array([item]))
    names = list(held_out)
    top, _ = mf.top_items(names, 10, exclude=[np.array(held_out[u][1]) for u in names])
    hits = sum(held_out[u][0] in top[b] for b, u in enumerate(names))
    random_rate = 10 / (n_items - per_user)
    assert hits / n_users > 3 * random_rate, hits / n_users


@pytest.mark.parametrize("n", [3, 60])
def test_mf_top_items_are_every_known_item_sorted_less_each_users_exclusions(n: int) -> None:
    mf = OnlineMF(n_factors=4, negatives=2, seed=3)
    rng = np.random.default_rng(n)
    mf.learn_many([f"u{k % 5}" for k in range(60)], rng.integers(0, 60, 60) * 2)  # even rows only: odd ones unknown
    users = ["u0", "nobody", "u2", "u3", "u4"]
    exclude = [rng.integers(-3, 130, 15) for _ in range(4)]  # unknown and out-of-range rows; the last user has none
    rows, scores = mf.top_items(users, n, exclude)
    known = np.flatnonzero(mf._known)
    assert 3 < len(known) < 60  # a partition for n=3; for n=60, every known item and padding
    for b, user in enumerate(users):
        ok = known[:0] if user == "nobody" else np.setdiff1d(known, exclude[b] if b < len(exclude) else [])
        theirs = mf.scores([user], ok[None, :])[0]
        want = ok[np.lexsort((ok, -theirs))][:n]
        assert rows[b].tolist() == want.tolist() + [-1] * (n - len(want))
        assert np.allclose(scores[b][: len(want)], np.sort(theirs)[::-1][: len(want)], atol=1e-5)


def test_mf_is_rivers_biased_mf_one_sample_at_a_time_and_reads_do_not_grow_the_model() -> None:
    from river import optim, reco

    river = reco.BiasedMF(4, bias_optimizer=optim.SGD(0.05), latent_optimizer=optim.SGD(0.05),
                          loss=optim.losses.Log(), l2_bias=0.001, l2_latent=0.001, seed=0)
    mf = OnlineMF(n_factors=4, negatives=0, seed=0)
    users, items = [f"u{k}" for k in range(7)], np.arange(13)
    mf.learn_many(users, np.zeros(7, np.int64), np.zeros(7))  # creates every user (and item 0) ...
    mf.learn_many(["u0"] * 13, items, np.zeros(13))  # ... and every item; then start both from River's draws
    mf._u[:7] = [river.u_latents[u] for u in users]
    mf._v[:13] = [river.i_latents[i] for i in items]
    mf._ub[:], mf._ib[:], mf._mean, mf._mean_n = 0.0, 0.0, 0.0, 0
    rng = np.random.default_rng(1)
    for k in range(200):
        user, item, y = users[k % 7], int(k % 13), float(rng.random() < 0.5)
        mf.learn_many([user], np.array([item]), y)
        river.learn_one(user, item, y)  # type: ignore[no-untyped-call]
    expected = [river.predict_one("u3", i) for i in items]  # type: ignore[no-untyped-call]
    assert np.allclose(mf.scores(["u3"], items[None])[0], expected, atol=1e-4)
    before = (len(mf._users), len(mf))
    mf.scores(["stranger"], np.array([[20]]))
    mf.top_items(["stranger"], 5)
    assert (len(mf._users), len(mf)) == before
    top, top_scores = mf.top_items(["u3"], 20, exclude=[np.array([0])])
    assert (top[0] >= 0).sum() == 12 and 0 not in top[0] and (np.diff(top_scores[0][top[0] >= 0]) <= 0).all()
