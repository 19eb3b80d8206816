"""The shared models apart from serving: lessons, snapshots and the swap give the lists one process gives."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from streams.build import build_recommender, build_shared_models
from streams.contracts import Event, Recommendation
from streams.learning import Lessons, SharedModels
from streams.learning.snapshot import Assembler, Snapshot, chunk_keys, decode, encode, to_chunks
from streams.recommender import Recommender
from streams.retrieval import Catalog, CatalogItem
from streams.settings import Settings
from streams.testing import run_batch, unit_rows

MIX = "similar=20,covisited=10,collaborative=10,trending=5,fresh=5"
SETTINGS = Settings(k=10, policy="dpp_explore", candidates=MIX)


def catalog(n: int = 60, order: list[int] | None = None) -> Catalog:
    vectors = unit_rows(np.random.default_rng(0), n, 16)
    rows = order or list(range(n))
    c = Catalog(16)
    c.upsert([CatalogItem(f"i{i}", f"t{i}", (f"g{i % 5}",), created_at=float(i)) for i in rows], vectors[rows])
    return c


def stream(n_batches: int = 12, size: int = 20) -> list[list[tuple[bytes, Event]]]:
    rng = np.random.default_rng(1)
    batches = []
    for b in range(n_batches):
        batch = []
        for j in range(size):
            user = f"u{rng.integers(12)}"
            item = f"i{int(rng.zipf(1.3)) % 60}"
            event = Event(event_id=f"e{b}-{j}", user_id=user, item_id=item, type="click", ts=1000.0 + 20 * b + j)
            batch.append((user.encode(), event))
        batches.append(batch)
    return batches


def recommender(settings: Settings = SETTINGS, order: list[int] | None = None) -> Recommender:
    return build_recommender(settings, catalog(order=order))


def items_of(lists: list[Recommendation]) -> list[list[tuple[str, float]]]:
    return [[(i.item_id, round(i.score, 9)) for i in rec.items] for rec in lists]


def test_lessons_through_a_learner_and_its_snapshots_reproduce_learning_in_place() -> None:
    # One process learns in place; a worker that does not learn itself ships its lessons (as bytes) to a
    # learner with a catalog of its own and loads the learner's snapshot after every batch.
    both = recommender()
    serve = recommender(SETTINGS.model_copy(update={"role": "serve"}))
    serve.learn = False
    learner = build_shared_models(SETTINGS, catalog())
    store_both: dict[bytes, bytes] = {}
    store_serve: dict[bytes, bytes] = {}
    for batch in stream():
        expected = run_batch(both, batch, store_both)
        got = run_batch(serve, batch, store_serve)
        assert items_of(got.lists) == items_of(expected.lists)
        assert got.lessons is not None and len(got.lessons)
        learner.learn(Lessons.from_bytes(got.lessons.to_bytes()))
        fresh = build_shared_models(SETTINGS, serve.catalog)
        serve.use(fresh, fresh.load_state(decode(encode(snapshot_of(learner))).arrays))
    assert_same_state(serve.shared(), both.shared())
    assert both.ranker.lessons > 0 and both.covisit.n_neighbours(both.catalog.row("i1")) > 0


def test_lessons_of_a_ranker_with_other_features_teach_everything_but_the_ranker() -> None:
    """During a rolling upgrade a learner may read lessons from a worker whose ranker had other features:
    they must not stop it (a record it cannot learn would stay on the topic), and the rest still counts."""
    serve = recommender(SETTINGS.model_copy(update={"role": "serve"}))
    serve.learn = False
    lessons = run_batch(serve, stream(1)[0], {}).lessons
    assert lessons is not None and len(lessons.rank_x)
    older = dataclasses.replace(lessons, rank_x=lessons.rank_x[..., :-3])  # as a 16-feature ranker made them
    learner = build_shared_models(SETTINGS, catalog())
    weights = learner.ranker.w.copy()
    learner.learn(older)
    assert np.array_equal(learner.ranker.w, weights) and learner.ranker.lessons == 0
    assert int(learner.covisit.state(len(learner.catalog))["fill"].sum()) > 0  # co-visitation learned
    assert float(learner.catalog.popularity().sum()) > 0


def test_two_serving_workers_serve_what_the_other_learned_once_a_snapshot_has_it() -> None:
    serving = [recommender(SETTINGS.model_copy(update={"role": "serve"})) for _ in range(2)]
    learner = build_shared_models(SETTINGS, catalog())
    stores: list[dict[bytes, bytes]] = [{}, {}]
    engaged: list[set[str]] = [set(), set()]
    for batch in stream():
        for w, serve in enumerate(serving):  # the users split between them, as partitions do
            mine = [(key, event) for key, event in batch if int(event.user_id[1:]) % 2 == w]
            engaged[w] |= {event.item_id for _, event in mine}
            lessons = run_batch(serve, mine, stores[w]).lessons
            assert lessons is not None
            learner.learn(Lessons.from_bytes(lessons.to_bytes()))
        state = decode(encode(snapshot_of(learner))).arrays
        for serve in serving:
            fresh = build_shared_models(SETTINGS, serve.catalog)
            serve.use(fresh, fresh.load_state(state))
            assert_same_state(serve.shared(), learner)
    only_other = sorted(engaged[1] - engaged[0])
    assert only_other, "the stream gives worker 1's users items worker 0's never touched"
    rows = serving[0].catalog.rows(only_other)
    assert (serving[0].catalog.popularity()[rows] > 0).all(), "worker 0 knows what worker 1's users engaged with"
    assert set(serving[0].mf.state(0)["users"].tolist()) == {f"u{i}" for i in range(12)} & {
        e.user_id for batch in stream() for _, e in batch}


def snapshot_of(models: SharedModels, version: int = 1) -> Snapshot:
    return Snapshot(version, 0.0, {}, {}, 0, models.state())


def assert_same_state(a: SharedModels, b: SharedModels, rtol: float = 0.0) -> None:
    """Byte-equal models; with ``rtol``, floats equal up to it (what was learned in another order or
    with the decay's scale folded in at another moment rounds, or decays, slightly otherwise)."""
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        x, y = sa[name], sb[name]
        if rtol and x.dtype.kind == "f" and x.shape == y.shape:
            np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=1e-12, err_msg=name)
        else:
            assert x.tobytes() == y.tobytes(), name


def test_a_restored_snapshot_is_byte_equal_and_learns_on_as_the_original() -> None:
    rec = recommender()
    store: dict[bytes, bytes] = {}
    batches = stream()
    for batch in batches[:6]:
        run_batch(rec, batch, store)
    saved = encode(snapshot_of(rec.shared()))
    restored = build_shared_models(SETTINGS, rec.catalog)
    popularity = restored.load_state(decode(saved).arrays)
    assert popularity.tobytes() == rec.catalog.popularities().tobytes()
    assert encode(snapshot_of(restored)) == saved


def test_a_worker_whose_catalog_numbers_items_otherwise_loads_the_same_models_by_item_id() -> None:
    rec = recommender()
    store: dict[bytes, bytes] = {}
    for batch in stream()[:6]:
        run_batch(rec, batch, store)
    other = catalog(order=list(range(59, -1, -1)))  # the same items, rows reversed, one unknown here
    models = build_shared_models(SETTINGS, other)
    popularity = models.load_state(rec.shared().state())
    for item in ("i1", "i2", "i7"):
        assert popularity[other.row(item)] == pytest.approx(rec.catalog.popularities()[rec.catalog.row(item)])
    mine = rec.catalog.rows(["i1", "i2", "i3"])
    theirs = other.rows(["i1", "i2", "i3"])
    assert models.covisit.score(theirs[:1], theirs[1:]).tolist() == rec.covisit.score(mine[:1], mine[1:]).tolist()
    assert models.mf.scores(["u1"], theirs[None, :]).tolist() == rec.mf.scores(["u1"], mine[None, :]).tolist()
    assert rec.take_rates.lift(mine).any(), "the ranker's lessons taught take rates"
    assert models.take_rates.lift(theirs).tolist() == rec.take_rates.lift(mine).tolist()


def test_a_snapshot_of_the_version_before_long_popularity_and_take_rates_loads() -> None:
    rec = recommender()
    store: dict[bytes, bytes] = {}
    for batch in stream()[:6]:
        run_batch(rec, batch, store)
    older = {k: v for k, v in rec.shared().state().items() if k != "popularity_long" and not k.startswith("take.")}
    serve = recommender()
    fresh = build_shared_models(SETTINGS, serve.catalog)
    serve.use(fresh, fresh.load_state(older))
    assert serve.catalog.popularities()[:, 0].tolist() == rec.catalog.popularity().tolist()
    assert not serve.catalog.popularities()[:, 1].any() and not serve.take_rates.lift(np.arange(60)).any()
    run_batch(serve, stream()[6], store)  # and serves and learns on from there
    assert serve.catalog.popularities()[:, 1].any() and serve.take_rates.lift(np.arange(60)).any()


def test_lessons_of_a_worker_without_candidate_ids_teach_all_but_take_rates() -> None:
    """A worker of the version before take rates sends no candidate ids with its ranked lists."""
    serve = recommender(SETTINGS.model_copy(update={"role": "serve"}))
    serve.learn = False
    lessons = run_batch(serve, stream(1)[0], {}).lessons
    assert lessons is not None and len(lessons.rank_x) and (lessons.rank_items[lessons.rank_valid] != "").all()
    with np.load(io.BytesIO(lessons.to_bytes())) as npz:
        older = io.BytesIO()
        np.savez(older, **{name: npz[name] for name in npz.files if name != "rank_items"})
    learner = build_shared_models(SETTINGS, catalog())
    learner.learn(Lessons.from_bytes(older.getvalue()))
    assert learner.ranker.lessons == len(lessons.rank_x)
    assert not learner.take_rates.lift(np.arange(60)).any()


def test_lessons_split_by_event_keep_every_lesson_once() -> None:
    rec = recommender()
    store: dict[bytes, bytes] = {}
    results = [run_batch(rec, batch, store) for batch in stream()[:4]]
    lessons = results[-1].lessons
    assert lessons is not None
    halves = [lessons.take(np.arange(0, 10)), lessons.take(np.arange(10, 20))]
    assert sum(len(h) for h in halves) == len(lessons)
    assert sum(len(h.recent) for h in halves) == len(lessons.recent)
    assert [r for h in halves for r in h.recent_lists()] == lessons.recent_lists()


def test_the_reader_takes_only_a_whole_snapshot_whose_checksum_matches() -> None:
    old, new = (encode(Snapshot(v, 0.0, {0: v}, {}, v, {"x": np.arange(50.0) * v})) for v in (1, 2))
    reader = Assembler()
    for key, value in to_chunks(old, 1, max_bytes=300):
        reader.add(key, value)
    partial = to_chunks(new, 2, max_bytes=300)
    for key, value in partial[:-1]:  # the learner died before its last chunk
        reader.add(key, value)
    whole = reader.latest()
    assert whole is not None and whole[0] == 1 and decode(whole[1]).offsets == {0: 1}
    key, value = partial[-1]
    reader.add(key, value[:-1] + bytes([value[-1] ^ 1]))  # a flipped bit
    assert reader.latest() == whole and reader.refused == len(partial)
    again = Assembler()
    records: list[tuple[bytes, bytes | None]] = [*partial, *((k, None) for k in chunk_keys(1, 1))]
    for key, tombstone_or_value in records:  # v1 tombstoned after v2
        again.add(key, tombstone_or_value)
    latest = again.latest()
    assert again.older_keys(2) == [], "v1 tombstoned: nothing older left on the topic"
    assert reader.older_keys(2) == chunk_keys(1, len(to_chunks(old, 1, max_bytes=300))), "v1 left: to tombstone"
    assert latest is not None and latest[0] == 2 and decode(latest[1]).arrays["x"][1] == 2.0


async def test_a_serving_worker_swaps_each_snapshot_in_with_its_own_newer_lessons_on_top() -> None:
    from streams.app.catalog import CatalogLoader
    from streams.app.snapshots import SnapshotFollower
    from streams.metrics import Metrics

    # The learner has folded batches 0-3 (events up to offset 60); the serving worker learned 0-4 in place.
    learner, serve, both = recommender(), recommender(), recommender()
    stores: list[dict[bytes, bytes]] = [{}, {}, {}]
    metrics = Metrics()
    follower = SnapshotFollower(
        SETTINGS, "models", CatalogLoader(SETTINGS, serve.catalog), serve,
        lambda: build_shared_models(SETTINGS, serve.catalog), metrics, lambda: {0: 100},
    )
    for i, batch in enumerate(stream()[:5]):
        run_batch(both, batch, stores[2])
        lessons = run_batch(serve, batch, stores[1]).lessons
        assert lessons is not None
        follower.own(0, 20 * (i + 1), lessons)
        if i < 4:
            run_batch(learner, batch, stores[0])
    reader = Assembler()
    for key, value in to_chunks(encode(Snapshot(1, 0.0, {}, {0: 80}, 4, learner.shared().state())), 1, 20_000):
        reader.add(key, value)
    await follower._take(reader)
    assert follower.serving is not None and follower.serving.version == 1 and follower.events_behind() == 20
    assert metrics.registry.get_sample_value("streamrec_models_snapshot_version") == 1
    assert_same_state(serve.shared(), both.shared(), rtol=1e-9)  # the snapshot, and batch 4 learned on top
    broken = {**learner.shared().state(), "ranker.w": np.zeros(3)}  # a learner with other features
    for key, value in to_chunks(encode(Snapshot(2, 0.0, {}, {0: 100}, 5, broken)), 2):
        reader.add(key, value)
    await follower._take(reader)
    assert follower.serving.version == 1, "the snapshot it cannot load is refused, the last one served"
    assert_same_state(serve.shared(), both.shared(), rtol=1e-9)


async def test_serving_workers_that_follow_each_others_lessons_learn_as_one_process_does() -> None:
    from streams.app.catalog import CatalogLoader
    from streams.app.snapshots import SnapshotFollower
    from streams.learning.lessons import to_record
    from streams.metrics import Metrics

    # Two serving workers, users split between them (as by events partition), each learning its own
    # batches in place and the other's as its lessons records arrive; one process learns every batch.
    workers = [recommender(), recommender()]
    followers = [
        SnapshotFollower(SETTINGS, "models", CatalogLoader(SETTINGS, w.catalog), w,
                         lambda w=w: build_shared_models(SETTINGS, w.catalog), Metrics(), lambda: {}, "learning")
        for w in workers
    ]
    both = recommender()
    stores: list[dict[bytes, bytes]] = [{}, {}, {}]
    next_offset, learning_offset = [0, 0], 0
    published: list[tuple[int, int, Lessons]] = []
    for batch in stream():
        for mine in range(2):
            part = [(key, e) for key, e in batch if int(e.user_id[1:]) % 2 == mine]
            result, reference = run_batch(workers[mine], part, stores[mine]), run_batch(both, part, stores[2])
            assert items_of(result.lists) == items_of(reference.lists), "the lists one process makes"
            assert result.lessons is not None
            next_offset[mine] += len(part)
            followers[mine].own(mine, next_offset[mine], result.lessons)
            record = to_record(result.lessons, mine, next_offset[mine])
            for reader in range(2):  # both read it back: its worker skips it, the other learns it
                learned = await followers[reader].learn_others([(0, learning_offset, record)])
                assert learned == (reader != mine)
            published.append((mine, next_offset[mine], result.lessons))
            learning_offset += 1
    assert_same_state(workers[0].shared(), both.shared())
    assert_same_state(workers[1].shared(), both.shared())
    # A snapshot of a learner that folded the first records only: what it lacks is learned again on top.
    learner, covered = build_shared_models(SETTINGS, catalog()), 9
    for _, _, lessons in published[:covered]:
        learner.learn(lessons)
    events = {m: max(o for w, o, _ in published[:covered] if w == m) for m in range(2)}
    reader = Assembler()
    for key, value in to_chunks(encode(Snapshot(1, 0.0, {0: covered}, events, covered, learner.state())), 1, 20_000):
        reader.add(key, value)
    for follower in followers:
        await follower._take(reader)
    assert_same_state(workers[0].shared(), both.shared(), rtol=1e-9)
    assert_same_state(workers[1].shared(), both.shared(), rtol=1e-9)
