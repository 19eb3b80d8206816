"""Failures on real Kafka (and real Triton): crashes, stops, a broker restart, an encoder outage.

The promise checked everywhere: every event gets a list (or a dead-letter record), duplicates are
bounded by what was in flight, and user state ends up as if nothing had happened.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from encoders import EMBEDDING_DIM
from streams.app.catalog import CatalogLoader
from streams.app.stamps import Stamped
from streams.build import build_recommender, make_catalog
from streams.contracts import DeadLetter, Event, EventType, Item, vectors_topic_name
from streams.demo.movielens import most_rated
from streams.harness import (
    RecommendationCollector,
    WorkerProcess,
    create_app_topics,
    produce,
    read_records,
    run_names,
    send_raw,
)
from streams.interest.multi import MultiInterestState
from streams.local.kafka import KafkaBroker
from streams.local.triton import TritonServer
from streams.settings import Settings
from streams.testing import free_ports, run_batch
from tests.integration.servers import running_triton

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 300


@pytest.fixture(scope="module")
def movielens() -> tuple[list[Item], list[Event]]:
    """The 300 most-rated movies and, oldest first, every rating of them (about 30,000)."""
    data = most_rated(N_ITEMS)
    return data.items, data.events


def make_settings(kafka: KafkaBroker, tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "kafka_bootstrap": kafka.bootstrap,
        **run_names("reliability"),
        "partitions": 2,
        "session_timeout_s": 6.0,
        "encoder": "local",
        "web_port": free_ports(1)[0],
        "data_dir": tmp_path / "worker",
        "batch_size": 200,
        **overrides,
    }
    return Settings.model_validate(fields)


async def open_run(
    kafka: KafkaBroker, tmp_path: Path, **overrides: object
) -> tuple[Settings, RecommendationCollector]:
    """Settings with fresh topics (created) and a started collector of their recommendations (reading
    committed data only under exactly-once)."""
    settings = make_settings(kafka, tmp_path, **overrides)
    await create_app_topics(settings)
    collector = RecommendationCollector(
        settings.kafka_bootstrap, settings.topic_recommendations, isolation_level=settings.isolation_level
    )
    await collector.start()
    return settings, collector


def launch(settings: Settings, log: Path, workers: list[WorkerProcess]) -> WorkerProcess:
    worker = WorkerProcess(settings, log)
    workers.append(worker)
    worker.start()
    return worker


async def start_with_catalog(
    settings: Settings, items: list[Item], log: Path, workers: list[WorkerProcess]
) -> WorkerProcess:
    worker = launch(settings, log, workers)
    await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in items))
    await wait_status(worker, lambda st: st["catalog_ready"] and st["items"] == len(items), 300, "catalog loaded")
    return worker


async def wait_status(worker: WorkerProcess, predicate: object, timeout_s: float, what: str) -> None:
    await asyncio.to_thread(worker.wait_until, predicate, timeout_s, what)


async def wait_lists(collector: RecommendationCollector, distinct: int, timeout_s: float) -> None:
    """Until lists for ``distinct`` different events arrived."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len({rec.event_id for _, rec in collector.received}) < distinct:
        if asyncio.get_running_loop().time() > deadline:
            got = len({rec.event_id for _, rec in collector.received})
            raise TimeoutError(f"lists for {got} of {distinct} events after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


def kill(worker: WorkerProcess) -> None:
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()


def terminate(worker: WorkerProcess) -> None:
    """SIGTERM: the batch in hand is finished and what is done is committed before a clean exit."""
    assert worker.stop(timeout_s=60) == 0, worker.log_tail()


def scrape(settings: Settings, name: str) -> float:
    """Sum of every sample of one metric family on the worker's /metrics."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and " " in line)


async def reference_states(settings: Settings, events: list[Event]) -> dict[bytes, bytes]:
    """The user states of an uncrashed run: the same code folds the same events in-process."""
    catalog = make_catalog(settings, EMBEDDING_DIM)
    vectors = await read_records(settings.kafka_bootstrap, vectors_topic_name(settings), idle_s=1.0)
    CatalogLoader(settings, catalog).load([(r.key, r.value) for r in vectors])
    store: dict[bytes, bytes] = {}
    recommender = build_recommender(settings, catalog)
    for start in range(0, len(events), 500):
        run_batch(recommender, [(e.user_id.encode(), e) for e in events[start : start + 500]], store)
    return store


async def stamped_states(settings: Settings) -> dict[bytes, Stamped]:
    """The user-state table as its changelog ends, by user key."""
    changelog, isolation = f"{settings.app_id}-user-state-changelog", settings.isolation_level
    records = await read_records(settings.kafka_bootstrap, changelog, idle_s=1.0, isolation_level=isolation)
    return {r.key: Stamped.of(r.value) for r in records if r.key is not None}


async def final_states(settings: Settings) -> dict[bytes, tuple[int, bytes | None]]:
    """The user-state table as its changelog ends: ``user key -> (last applied offset, state)``."""
    return {key: (st.offset, st.state) for key, st in (await stamped_states(settings)).items()}


async def run_with_restart(
    settings: Settings,
    collector: RecommendationCollector,
    items: list[Item],
    events: list[Event],
    log: Path,
    workers: list[WorkerProcess],
    stop: Callable[[WorkerProcess], None],
    after: int,
) -> None:
    """Stream ``events`` to a worker, ``stop`` it once ``after`` lists arrived, restart it; then check
    every event has a list, duplicates stay within one batch and user states equal an uncrashed run."""
    worker = await start_with_catalog(settings, items, log, workers)
    await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events))
    await wait_lists(collector, after, 300)
    stop(worker)
    worker = launch(settings, log, workers)
    try:
        await wait_lists(collector, len(events), 600)
        await asyncio.sleep(3.0)  # late duplicates would show up now
        replayed = scrape(settings, "streamrec_events_replayed_total")  # by the restarted worker
    finally:
        worker.stop()
        await collector.stop()

    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in events}, "every event has a list, and only events have lists"
    duplicates = sum(lists.values()) - len(lists)
    assert duplicates <= settings.batch_size, f"{duplicates} duplicate lists: more than one batch was in flight"
    if stop is terminate:  # a graceful stop finished its batch and committed all it handled
        assert duplicates == 0, f"{duplicates} duplicate lists after a graceful stop"
        assert replayed == 0, f"{replayed} events handled before the stop were read again: not all was committed"
    if settings.processing_guarantee == "exactly_once":  # a reader of committed data sees each list once
        assert duplicates == 0, f"{duplicates} duplicate lists under exactly-once"
        assert replayed == 0, f"{replayed} events applied in a committed state were read again"

    # User state after the restart is exactly the state of a run that never stopped.
    expected = await reference_states(settings, events)
    got = await final_states(settings)
    assert set(got) == set(expected)
    diff = [key for key, (_, state) in got.items() if state != expected[key]]
    assert not diff, f"{len(diff)} of {len(got)} user states differ from the uncrashed run, e.g. {diff[:3]}"
    assert all(offset >= 0 for offset, _ in got.values())


@pytest.mark.parametrize(
    ("stop", "after", "guarantee"),
    [
        pytest.param(kill, 8_000, "at_least_once", id="sigkill"),
        pytest.param(terminate, 3_000, "at_least_once", id="sigterm"),
        pytest.param(kill, 8_000, "exactly_once", id="sigkill-exactly-once"),
    ],
)
async def test_stop_and_restart_lose_nothing(
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
    stop: Callable[[WorkerProcess], None],
    after: int,
    guarantee: str,
) -> None:
    """A worker stopped in the middle of 20,000 events and restarted: nothing is lost (nor repeated,
    under exactly-once, for a reader of committed data)."""
    items, all_events = movielens
    settings, collector = await open_run(kafka_broker, tmp_path, processing_guarantee=guarantee)
    await run_with_restart(
        settings, collector, items, all_events[:20_000], tmp_path / "worker.log", workers, stop, after=after
    )


async def test_exactly_once_through_rebalances(
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
) -> None:
    """Under exactly-once, a second worker joins mid-stream (the partitions are split between live
    workers) and then the first is killed: a reader of committed data still sees each list once."""
    items, all_events = movielens
    events = all_events[:20_000]
    settings, collector = await open_run(kafka_broker, tmp_path, processing_guarantee="exactly_once")
    first = await start_with_catalog(settings, items, tmp_path / "first.log", workers)
    second = settings.model_copy(update={"web_port": free_ports(1)[0], "data_dir": tmp_path / "second"})
    try:
        await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events[:10_000]))
        await wait_lists(collector, 4_000, 300)
        joining = launch(second, tmp_path / "second.log", workers)
        await wait_status(joining, lambda st: st["catalog_ready"], 300, "second worker ready")
        await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events[10_000:]))
        await wait_lists(collector, 14_000, 300)
        assert scrape(second, "streamrec_recommendations_total") > 0, "the second worker took a partition"
        kill(first)
        await wait_lists(collector, len(events), 600)
        await asyncio.sleep(3.0)  # late duplicates would show up now
    finally:
        await collector.stop()
    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in events}
    assert sum(lists.values()) == len(lists), f"{sum(lists.values()) - len(lists)} duplicates under exactly-once"
    expected = await reference_states(settings, events)
    got = await final_states(settings)
    diff = [key for key, (_, state) in got.items() if state != expected.get(key)]
    assert set(got) == set(expected) and not diff, f"{len(diff)} of {len(got)} user states differ"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_broker_restart_under_load(
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
    guarantee: str,
) -> None:
    """The broker restarted under load: the worker reconnects and every event gets its list (once, for
    a reader of committed data under exactly-once: the transactions the outage broke are aborted and
    their events handled again once new producers start)."""
    items, all_events = movielens
    events = all_events[:8_000]
    settings, collector = await open_run(kafka_broker, tmp_path, processing_guarantee=guarantee)
    worker = await start_with_catalog(settings, items, tmp_path / "worker.log", workers)
    try:
        await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events))
        await wait_lists(collector, 1_000, 300)
        # The broker goes away while the worker has a backlog, and comes back on the same ports.
        await asyncio.to_thread(kafka_broker.stop)
        await asyncio.sleep(5.0)
        await asyncio.to_thread(kafka_broker.start)
        await wait_lists(collector, len(events), 600)
        assert worker.proc is not None and worker.proc.poll() is None, "the worker survived the outage"
    finally:
        worker.stop()
        await collector.stop()
    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in events}
    duplicates = sum(lists.values()) - len(lists)
    assert duplicates <= settings.batch_size * settings.partitions
    if guarantee == "exactly_once":
        assert duplicates == 0, f"{duplicates} duplicate lists under exactly-once"


@pytest.fixture
def own_triton(tmp_path: Path) -> Iterator[TritonServer]:
    """A Triton of this test's own, since the test stops it."""
    yield from running_triton(tmp_path / "triton")


async def test_encoder_outage(
    kafka_broker: KafkaBroker,
    own_triton: TritonServer,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
) -> None:
    items, all_events = movielens
    old, new = items[:200], items[200:]
    old_ids = {it.item_id for it in old}
    events = [e for e in all_events if e.item_id in old_ids][:3_000]
    settings, collector = await open_run(kafka_broker, tmp_path, encoder="triton", triton_url=own_triton.url)
    worker = await start_with_catalog(settings, old, tmp_path / "worker.log", workers)
    try:
        await asyncio.to_thread(own_triton.stop)
        # Triton is down for 30 s while new items and events keep coming.
        await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in new))
        await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events), rate=200)
        await wait_lists(collector, len(events), 120)  # lists keep coming from the items already embedded
        status = worker.status()
        assert status is not None and status["items"] == len(old), "new items wait for the encoder"
        assert scrape(settings, "streamrec_encoder_errors_total") > 0, "the metrics show the outage"
        await asyncio.sleep(max(0.0, 30.0 - 3_000 / 200))
        await asyncio.to_thread(own_triton.start, 180)
        # After it returns the new items are embedded (retried, not dropped) and get recommended.
        await wait_status(worker, lambda st: st["items"] == len(items), 240, "new items embedded")
        late = [  # now: an event from the future would be refused (future_ts)
            Event(event_id=f"late-{i}", user_id=f"late-{i}", item_id=it.item_id, type=EventType.CLICK, ts=time.time())
            for i, it in enumerate(new[:20])
        ]
        await produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in late))
        await wait_lists(collector, len(events) + len(late), 120)
    finally:
        worker.stop()
        await collector.stop()
    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in [*events, *late]}
    dead = await read_records(settings.kafka_bootstrap, settings.topic_dead_letter, idle_s=1.0)
    assert dead == [], "no event was refused while the encoder was away"
    new_ids = {it.item_id for it in new}
    shown = {item.item_id for _, rec in collector.received for item in rec.items}
    assert shown & new_ids, "items embedded after the outage are recommended"


async def user_states(settings: Settings) -> dict[str, MultiInterestState]:
    """The user states as the changelog ends, decoded, by user id."""
    table = await final_states(settings)
    return {key.decode(): MultiInterestState.from_bytes(state) for key, (_, state) in table.items() if state}


def ready_code(settings: Settings) -> int:
    """The HTTP status of the worker's readiness signal."""
    url = f"http://{settings.web_host}:{settings.web_port}/streamrec/ready/"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


async def test_events_for_items_waiting_for_the_encoder_count_at_once_through_a_crash(
    kafka_broker: KafkaBroker,
    own_triton: TritonServer,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
) -> None:
    """Triton is stopped and 100 new items arrive, then one event on each: every event gets its list at
    once and nothing is dead-lettered; their interest updates wait in the users' states, which a SIGKILL
    in the middle does not lose; once Triton is back the items are embedded and the users' interests take
    them in, without another event of theirs."""
    items, _ = movielens
    old, new = items[:200], items[200:]
    settings, collector = await open_run(kafka_broker, tmp_path, encoder="triton", triton_url=own_triton.url,
                                         batch_size=10)
    worker = await start_with_catalog(settings, old, tmp_path / "worker.log", workers)
    users = [f"fresh-{n}" for n in range(25)]
    events = [
        Event(event_id=f"new-{i}", user_id=users[i % len(users)], item_id=it.item_id, type=EventType.CLICK,
              ts=time.time())
        for i, it in enumerate(new)
    ]
    try:
        await asyncio.to_thread(own_triton.stop)
        await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in new))
        waiting = await asyncio.to_thread(
            worker.wait_until, lambda st: st["items_waiting"] == len(new), 60, "new items seen on the items topic"
        )
        assert (waiting["items"], waiting["items_on_topic"], waiting["catalog_ready"]) == (len(old), len(items), False)
        assert ready_code(settings) == 503 and scrape(settings, "streamrec_catalog_items_waiting") == len(new)
        # retiring needs no encoder either
        await send_raw(settings.kafka_bootstrap, settings.topic_items, [(old[1].item_id.encode(), None)])
        await wait_status(worker, lambda st: st["items_retired"] == 1, 60, "an item retired with Triton away")
        sending = asyncio.create_task(
            produce(settings.kafka_bootstrap, settings.topic_events, ((e.user_id, e) for e in events), rate=10)
        )
        await wait_lists(collector, 40, 120)
        kill(worker)  # in the middle of the events, their held updates in the user states
        assert not sending.done(), "the events were still coming when the worker was killed"
        worker = launch(settings, tmp_path / "worker.log", workers)
        await sending
        await wait_lists(collector, len(events), 180)
        held = Counter(item_id for state in (await user_states(settings)).values() for item_id, _, _ in state.pending)
        assert held == Counter(it.item_id for it in new), "each event's interest update waits, once, none lost"

        await asyncio.to_thread(own_triton.start, 180)
        await wait_status(worker, lambda st: st["catalog_ready"] and st["items"] == len(items), 240, "items embedded")
        assert ready_code(settings) == 200
        final = await until_folded(settings, users, 60)
    finally:
        worker.stop()
        await collector.stop()
    assert {rec.event_id for _, rec in collector.received} == {e.event_id for e in events}, "no other list"
    shown = {item.item_id for _, rec in collector.received for item in rec.items}
    assert old[1].item_id not in shown, "retired before these events: in none of their lists, the restart's included"
    dead = await read_records(settings.kafka_bootstrap, settings.topic_dead_letter, idle_s=1.0)
    assert dead == [], "no event was refused while its item waited for the encoder"
    for user in users:
        mine = [e.item_id for e in events if e.user_id == user]
        assert final[user].pending == [] and not final[user].is_cold, f"{user}'s interests took in its new items"
        assert set(mine) <= set(final[user].history)


async def until_folded(settings: Settings, users: list[str], timeout_s: float) -> dict[str, MultiInterestState]:
    """The user states once no interest update of ``users`` waits any more (read from the changelog)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = await user_states(settings)
        if all(user in states and not states[user].pending for user in users):
            return states
        if time.monotonic() > deadline:
            waiting = sum(len(states[u].pending) for u in users if u in states)
            raise TimeoutError(f"{waiting} interest updates still wait after {timeout_s:.0f} s")
        await asyncio.sleep(1.0)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_events_before_their_items_wait_through_a_crash_and_count_once_the_items_come(
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    movielens: tuple[list[Item], list[Event]],
    workers: list[WorkerProcess],
    guarantee: str,
) -> None:
    """Events for 100 items not on the items topic yet, and 5 for an item that never comes: no list and no
    dead letter while they wait in their users' states, which a SIGKILL in the middle does not lose; once
    the items are produced, every one of those events gets its list (once, under exactly-once) and counts
    in its user's history and interests; the 5 go to the dead-letter topic as ``unknown_item``, with their
    bytes, after the timeout."""
    items, _ = movielens
    old, new = items[:200], items[200:]
    timeout_s = 45.0
    settings, collector = await open_run(kafka_broker, tmp_path, batch_size=10, processing_guarantee=guarantee,
                                         unknown_item_timeout_s=timeout_s)
    worker = await start_with_catalog(settings, old, tmp_path / "worker.log", workers)
    users = [f"early-{n}" for n in range(25)]
    events = [
        Event(event_id=f"early-{i}", user_id=users[i % len(users)], item_id=it.item_id, type=EventType.CLICK,
              ts=time.time())
        for i, it in enumerate(new)
    ]
    never = [Event(event_id=f"never-{i}", user_id=users[i], item_id="never-produced", type=EventType.CLICK,
                   ts=time.time()) for i in range(5)]
    # 1-star ratings: a list each, and no interest (whatever interest these users end with is the late items')
    answered = [Event(event_id=f"known-{u}", user_id=u, item_id=old[0].item_id, type=EventType.RATING, value=1.0,
                      ts=time.time()) for u in users]
    try:
        sending = asyncio.create_task(produce(
            settings.kafka_bootstrap, settings.topic_events,
            ((e.user_id, e) for e in [*events[:50], *never, *answered, *events[50:]]), rate=10,
        ))
        await wait_lists(collector, 10, 60)  # the events on known items are answered meanwhile
        kill(worker)  # in the middle of the events, some parked in the user states
        assert not sending.done(), "the events were still coming when the worker was killed"
        worker = launch(settings, tmp_path / "worker.log", workers)
        await sending
        await wait_lists(collector, len(answered), 120)
        await wait_status(worker, lambda st: st["events_waiting"] == len(events) + len(never), 60, "events parked")
        assert {rec.event_id for _, rec in collector.received} == {e.event_id for e in answered}
        parked = Counter(p.item_id for st in (await stamped_states(settings)).values() for p in st.parked)
        assert parked == Counter([*(it.item_id for it in new), *(e.item_id for e in never)]), "each parked once"

        await produce(settings.kafka_bootstrap, settings.topic_items, ((it.item_id, it) for it in new))
        await wait_lists(collector, len(answered) + len(events), 120)
        final = await until_folded(settings, users, 60)
        dead_raw = await read_records(settings.kafka_bootstrap, settings.topic_dead_letter, idle_s=1.0,
                                      at_least=len(never), timeout_s=timeout_s + 60)
        await wait_status(worker, lambda st: st["events_waiting"] == 0, 30, "no event parked")
    finally:
        worker.stop()
        await collector.stop()
    lists = Counter(rec.event_id for _, rec in collector.received)
    assert set(lists) == {e.event_id for e in [*answered, *events]}, "a list for every event whose item came"
    if guarantee == "exactly_once":
        assert max(lists.values()) == 1, "each list once under exactly-once"
    dead = [DeadLetter.model_validate_json(r.value) for r in dead_raw if r.value is not None]
    assert sorted((d.reason, d.topic) for d in dead) == [("unknown_item", settings.topic_events)] * len(never)
    originals = [Event.model_validate_json(base64.b64decode(d.original_b64)) for d in dead]
    assert sorted(e.event_id for e in originals) == sorted(e.event_id for e in never), "with their bytes"
    for user in users:
        mine = [e.item_id for e in events if e.user_id == user]
        assert set(mine) <= set(final[user].history), f"{user}'s events on the late items are in its history"
        assert not final[user].is_cold, f"{user}'s interests took in the late items"
