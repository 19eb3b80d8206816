"""One evaluation run: every system replayed over the same events, scored the same way, then reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from streams.build import build_recommender
from streams.contracts import Event, Item, Recommendation
from streams.evaluate import ablation
from streams.evaluate.baselines import BASELINES, make_baseline
from streams.evaluate.data import build_catalog, catalog_vectors, load_dataset, sample_users
from streams.evaluate.metrics import RunMetrics
from streams.evaluate.protocol import N_TARGETS, POSITIVE_RATING, Prequential, System, replay
from streams.evaluate.recall import PoolRecall
from streams.policies import POLICY_NAMES
from streams.retrieval import Catalog
from streams.settings import Settings

#: The reranker parameter a ``--lambdas`` sweep sets, per policy (``mmr@0.5`` is MMR with lambda 0.5).
SWEPT = {"mmr": "mmr_lambda", "dpp": "dpp_theta", "calibrated": "calibration_lambda"}
DEFAULT_LAMBDAS = (0.3, 0.5, 0.9)

#: Published lists for a system name: ``(event, list made after it)`` in event order.
Source = Callable[[str, Catalog, "Callable[[int], None]"], Iterable[tuple[Event, Recommendation]]]


def system_names(
    policies: Sequence[str] | None = None, lambdas: Sequence[float] = DEFAULT_LAMBDAS, settings: Settings | None = None
) -> list[str]:
    """Baselines, policies and the lambda sweep, in report order; ``policies`` picks among baselines and
    policies (the sweep covers the swept ones picked). A sweep point equal to a policy's setting is that
    policy, not run twice.

    >>> system_names(["popular", "mmr"], [0.5, 0.7])
    ['popular', 'mmr', 'mmr@0.5']
    """
    s = settings or Settings()
    known = (*BASELINES, *POLICY_NAMES)
    chosen = list(known) if not policies else list(dict.fromkeys(policies))
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {', '.join(known)}")
    for lam in lambdas:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda {lam} outside [0, 1]")
    names = [n for n in known if n in chosen]
    names += [f"{p}@{lam:g}" for p in SWEPT if p in chosen for lam in lambdas if lam != getattr(s, SWEPT[p])]
    return names


def make_system(name: str, settings: Settings, catalog: Catalog) -> System:
    """A fresh system (nothing learned yet) for a name of :func:`system_names`."""
    if name in BASELINES:
        return make_baseline(name, settings, catalog)
    if name.startswith(ablation.PREFIX):
        return ablation.ablate(name, build_recommender(policy_settings(ablation.POLICY, settings), catalog))
    return build_recommender(policy_settings(name, settings), catalog)


def policy_settings(name: str, settings: Settings) -> Settings:
    """The settings a streamrec policy or sweep point runs with: everyone on that policy."""
    policy, _, lam = name.partition("@")
    update: dict[str, Any] = {"policy": policy, "ab_split": ""}
    if lam:
        update[SWEPT[policy]] = float(lam)
    return settings.model_copy(update=update)


@dataclass
class Evaluation:
    """Inputs shared by every system of a run."""

    dataset: str
    items: list[Item]
    events: list[Event]
    settings: Settings
    vectors: Any
    protocol: dict[str, Any] = field(default_factory=dict)
    #: Each streamrec system's pool recall, from its in-process replay.
    pool_recall: dict[str, PoolRecall] = field(default_factory=dict)

    def catalog(self) -> Catalog:
        return build_catalog(self.items, self.vectors, self.settings)

    def offline(
        self, name: str, catalog: Catalog, advance: Callable[[int], None]
    ) -> Iterator[tuple[Event, Recommendation]]:
        """The lists the system publishes when driven in-process, as the worker drives it."""
        system = make_system(name, self.settings, catalog)
        recall = self.pool_recall[name] = PoolRecall(lambda item: catalog.row(item) if item in catalog else None)
        return replay(system, self.events, self.settings.batch_size, on_batch=advance, on_traces=recall.feed)

    def score(
        self, name: str, source: Source, advance: Callable[[int], None], dump: IO[str] | None = None
    ) -> Outcome:
        started = time.perf_counter()
        catalog = self.catalog()
        genres = {it.item_id: it.categories for it in self.items}
        rows = {it.item_id: i for i, it in enumerate(self.items)}
        metrics = RunMetrics(rows, self.vectors, [frozenset(it.categories) for it in self.items])  # @10 whatever K
        preq = Prequential(self.events, genres, name)
        for event, published in source(name, catalog, advance):
            scored = preq.feed(event, published)
            if scored is not None:
                metrics.add(scored)
                if dump is not None:
                    dump.write(json.dumps(scored.to_json()) + "\n")
        recall = self.pool_recall.get(name)
        return Outcome(
            metrics.summary(), recall.summary() if recall is not None and recall.positives else None,
            sum(1 for _ in preq.targets) - preq.cold, preq.cold, time.perf_counter() - started,
        )


@dataclass(frozen=True)
class Outcome:
    """One system's scores: small, so it comes back cheaply from a worker process (``--jobs``)."""

    metrics: dict[str, float]
    #: The pool recall of a system that traces its pools (the streamrec systems, in-process).
    recall: dict[str, float] | None
    lists_scored: int
    cold: int
    seconds: float


def prepare(
    dataset: str, settings: Settings, sample: int | None, seed: int, progress: Progress | None = None
) -> Evaluation:
    """Load the data, draw the user sample, embed (or read the cached vectors of) the catalog."""
    data = load_dataset(dataset)
    events = sample_users(data.events, sample, seed)
    if progress is None:
        vectors = catalog_vectors(data.items, settings.cache_dir)
    else:
        task = progress.add_task("embedding catalog", total=len(data.items))
        vectors = catalog_vectors(data.items, settings.cache_dir, on_progress=lambda n: progress.advance(task, n))
        progress.update(task, completed=len(data.items))
    protocol = {
        "kind": "prequential, event-time order, test then learn",
        "scored": "at each positive event, the list published after the user's previous event",
        "positive": f"rating >= {POSITIVE_RATING:g}",
        "targets": f"the items of this and the user's next {N_TARGETS - 1} positive events",
        "cold": "a user's first event has no list before it and is not scored",
        "k": settings.k,
        "batch_size": settings.batch_size,
        "sample_users": sample,
        "seed": seed,
        "users": len({e.user_id for e in events}),
    }
    return Evaluation(dataset, data.items, events, settings, vectors, protocol)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def run_evaluation(
    ev: Evaluation,
    names: Sequence[str],
    progress: Progress | None = None,
    dump_path: Path | None = None,
    sources: dict[str, Source] | None = None,
    jobs: int = 1,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Score every named system; returns ``metrics.json``'s content and each system's seconds. Ablations
    (:func:`~streams.evaluate.ablation.ablation_names`) go under ``ablation``, not among the policies.

    ``sources`` overrides where a system's lists come from (``--through-kafka``, always one system
    after another); the default is the in-process replay, in ``jobs`` worker processes above 1.
    """
    if dump_path is not None:
        dump_path.parent.mkdir(parents=True, exist_ok=True)
    if jobs > 1 and not sources:
        from streams.evaluate.parallel import score_parallel

        outcomes = score_parallel(ev, names, jobs, progress, dump_path)
    else:
        outcomes = score_in_turn(ev, names, progress, dump_path, sources or {})
    return summarise(ev, outcomes), {name: o.seconds for name, o in outcomes.items()}


def score_in_turn(
    ev: Evaluation, names: Sequence[str], progress: Progress | None, dump_path: Path | None,
    sources: dict[str, Source],
) -> dict[str, Outcome]:
    """Each system in turn, in this process."""
    outcomes: dict[str, Outcome] = {}
    with dump_path.open("w") if dump_path is not None else nullcontext() as dump:
        for name in names:
            advance = tracker(progress, name, len(ev.events))
            outcomes[name] = ev.score(name, sources.get(name, ev.offline), advance, dump)
    return outcomes


def tracker(progress: Progress | None, name: str, total: int) -> Callable[[int], None]:
    """A new bar for system ``name`` and what advances it (nothing without a display)."""
    if progress is None:
        return lambda n: None
    task = progress.add_task(name, total=total)
    return lambda n: progress.advance(task, n)


def summarise(ev: Evaluation, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """``metrics.json``'s content from the outcomes, in their (report) order."""
    protocol = dict(ev.protocol)
    if outcomes:
        last = list(outcomes.values())[-1]
        protocol["lists_scored"], protocol["cold_positives"] = last.lists_scored, last.cold
    results = {n: o.metrics for n, o in outcomes.items()}
    ablated = [n for n in results if n.startswith(ablation.PREFIX)]
    out: dict[str, Any] = {
        "dataset": ev.dataset, "protocol": protocol, "events": len(ev.events),
        "policies": {n: m for n, m in results.items() if n not in ablated},
        "pool_recall": {n: o.recall for n, o in outcomes.items() if o.recall is not None},
    }
    if ablated:
        out["ablation"] = {n: results[n] for n in ablated}
    return out
