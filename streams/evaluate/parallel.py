"""``--jobs N``: the independent replays (systems, sweep points, ablation variants) in N worker processes.

Each system's replay is deterministic and shares nothing with the others', so a worker needs only the
prepared :class:`~streams.evaluate.run.Evaluation`: the workers are forked, so they inherit it (and the
parent's one-BLAS-thread limit) instead of unpickling 100,000 events. What comes back is small: each
system's :class:`~streams.evaluate.run.Outcome` as a future, its progress through a queue, and with
``--dump-recs`` its lists in a part file of its own, joined in report order at the end, so every
output is the one-process run's (timings aside).
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from multiprocessing.queues import SimpleQueue
from pathlib import Path

from rich.progress import Progress

from streams.evaluate.baselines import BASELINES
from streams.evaluate.run import Evaluation, Outcome, tracker

#: ``(system, events replayed since the last message)``; 0 when the system starts.
Message = tuple[str, int]

# What a forked worker inherited from the parent (set by the pool's initializer, in the worker).
_shared: tuple[Evaluation, SimpleQueue[Message]] | None = None


def _adopt(ev: Evaluation, messages: SimpleQueue[Message]) -> None:
    global _shared
    _shared = ev, messages


def _score(name: str, part: Path | None) -> Outcome:
    """One system's replay, in a worker."""
    assert _shared is not None, "runs in a pool started by score_parallel"
    ev, messages = _shared
    messages.put((name, 0))
    with part.open("w") if part is not None else nullcontext() as dump:
        return ev.score(name, ev.offline, lambda n: messages.put((name, n)), dump)


def score_parallel(
    ev: Evaluation, names: Sequence[str], jobs: int, progress: Progress | None = None, dump_path: Path | None = None
) -> dict[str, Outcome]:
    """Every named system's outcome, in the order of ``names``, from ``jobs`` processes."""
    ctx = multiprocessing.get_context("fork")
    # A simple queue's puts are written at once: a system's last one is in before its outcome.
    messages: SimpleQueue[Message] = ctx.SimpleQueue()
    # The streamrec systems take 2-4 times as long as a baseline: they go first, so that the baselines
    # fill the gaps at the end instead of one long replay running alone.
    order = sorted(names, key=lambda name: name in BASELINES)
    with tempfile.TemporaryDirectory(dir=dump_path.parent if dump_path else None) as parts_dir:
        parts = {name: Path(parts_dir, f"{i}.jsonl") for i, name in enumerate(names)}
        pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_adopt, initargs=(ev, messages))
        try:
            futures = {pool.submit(_score, name, parts[name] if dump_path else None): name for name in order}
            follow(futures, messages, progress, len(ev.events))
            outcomes = {futures[f]: f.result() for f in futures}
        finally:
            pool.shutdown(cancel_futures=True)
        if dump_path is not None:
            with dump_path.open("wb") as dump:
                for part in parts.values():
                    with part.open("rb") as lines:
                        shutil.copyfileobj(lines, dump)
    return {name: outcomes[name] for name in names}


def follow(
    futures: dict[Future[Outcome], str], messages: SimpleQueue[Message], progress: Progress | None, total: int
) -> None:
    """Show one bar per system from its start until all are done; the first failure is raised."""
    bars: dict[str, Callable[[int], None]] = {}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        while not messages.empty():
            name, n = messages.get()
            if name not in bars:
                bars[name] = tracker(progress, name, total)
            bars[name](n)
        for future in done:
            future.result()  # a failed system fails the run now, not after every other replay
