"""``streamrec bench [rerank|wire|core|pipeline|encoder|memory|snapshot|all]``: figures into ``bench.json``, a
table each.

Never a timed assertion anywhere: these are measurements, named by machine, commit and date.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Measure speed and memory; merge the results into bench.json and print a table.")
console = Console()

DEFAULT_OUT = Path("bench.json")
OUT = typer.Option(DEFAULT_OUT, "--out", help="JSON file every part's section is merged into")
# A part's own --out wins; without one it writes where `streamrec bench --out X <part>` said (the
# group's callback runs first and leaves it here: typer's context is its own click's, not click's).
PART_OUT = typer.Option(None, "--out", help="JSON file the part's section is merged into (default: bench's --out)")
_GROUP_OUT = {"out": DEFAULT_OUT}
Row = Sequence[str]


def publish(
    out: Path | None, part: str, section: dict[str, Any], title: str, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """The one way every part reports: merge into ``out`` (else the group's ``--out``; with the
    environment), print one table."""
    from streams.bench import merge_section

    out = out or _GROUP_OUT["out"]
    env = merge_section(out, part, section)["environment"]
    table = Table(title=f"{title}\n{env['cores']} cores, {env['processor']}, commit {env['commit']}, {env['date']}")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{part} written to {out}[/dim]")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


@app.callback(invoke_without_command=True)
def bench(ctx: typer.Context, out: Path = OUT) -> None:
    """Without a part: run them all with their defaults (about 10 minutes on 2 cores)."""
    _GROUP_OUT["out"] = out
    if ctx.invoked_subcommand is None:
        run_all(out)


@app.command()
def rerank(
    out: Path | None = PART_OUT,
    n: int = typer.Option(500, help="candidates"),
    k: int = typer.Option(20, help="list length"),
    d: int = typer.Option(384, help="embedding dimension"),
    repeats: int = typer.Option(400, help="timed runs per algorithm"),
) -> None:
    """Each reranker and its naive reference on one core, same request, same run."""
    from streams.bench.rerank import bench_rerank

    results = bench_rerank(n=n, k=k, d=d, repeats=repeats)
    rows = [[name, _ms(r["median_ms"]), _ms(r["p99_ms"]), f"{r['repeats']:.0f}"] for name, r in results.items()]
    section = {"n": n, "k": k, "d": d, "results": results}
    publish(
        out,
        "rerank",
        section,
        f"rerank: N={n}, K={k}, d={d}, one core",
        ["algorithm", "median ms", "p99 ms", "runs"],
        rows,
    )


@app.command()
def wire(
    out: Path | None = PART_OUT,
    items: int = typer.Option(9066, help="catalog size (random vectors)"),
    events: int = typer.Option(20_000, help="events through the handler"),
    batch: int = typer.Option(500, help="micro-batch size"),
) -> None:
    """The worker's work around the recommender, one core, no Kafka: decode, encode, the events handler."""
    from streams.bench.wire import bench_wire

    section = bench_wire(n_items=items, events=events, batch=batch)
    dec, handler = section["decode_us"], section["handler"]
    rows: list[Row] = [
        ["decode an event: strict / as the worker does", f"{dec['event_strict']:.2f} / {dec['event']:.2f} us"],
        ["decode an item with its vector: strict / as the worker does",
         f"{dec['embedded_item_strict']:.2f} / {dec['embedded_item']:.2f} us"],
        [f"encode a list of {section['k']}", f"{section['encode_us']['list']:.2f} us"],
        *([f"handler: {step}", f"{handler[f'{step}_ms_per_event']:.4f} ms/event"]
          for step in ("take", "answer", "published", "total")),
    ]
    publish(out, "wire", section, f"wire: {items:,} items, batches of {batch}, one core", ["step", "CPU"], rows)


@app.command()
def core(
    out: Path | None = PART_OUT,
    events: int = typer.Option(2_000, help="timed events per batch size (the same ones for each)"),
    warmup: int = typer.Option(20_000, help="events replayed at batch 100 before timing (not timed)"),
    batches: str = typer.Option("1,10,100,500", help="batch sizes"),
    policy: str = typer.Option("", help="policy (default: the settings' policy)"),
    movielens: bool = typer.Option(True, help="the MovieLens run (--no-movielens: only the --items scale runs)"),
    items: str = typer.Option("", help="scale: synthetic catalogs of these sizes, e.g. 100000,1000000 (slow)"),
    indexes: str = typer.Option("exact,hnsw", help="scale: index kinds to measure at each size"),
    scale_warmup: int = typer.Option(2_000, help="scale: events replayed before timing"),
    scale_events: int = typer.Option(1_000, help="scale: timed events at batch 100"),
) -> None:
    """Recommender.process alone on one core: CPU ms per event by batch size, a profile; --items: scale."""
    from streams.bench.core import INDEXES, PROFILE_BATCH, bench_core, bench_scale, movielens_workload, progress_bar
    from streams.policies import POLICY_NAMES
    from streams.settings import Settings

    if policy and policy not in POLICY_NAMES:
        raise typer.BadParameter(f"unknown policy {policy!r}; known: {', '.join(POLICY_NAMES)}", param_hint="--policy")
    settings = Settings()
    settings = settings.model_copy(update={"policy": policy}) if policy else settings
    section: dict[str, Any] = {}
    rows: list[Row] = []
    if movielens:
        workload = movielens_workload(settings)
        with progress_bar(console) as progress:
            section = bench_core(
                workload,
                settings,
                warmup=warmup,
                events=events,
                batches=[int(b) for b in _float_list(batches)],
                progress=progress,
            )
        for size, r in section["batches"].items():
            rows.append(
                [
                    f"{workload.name}, batch {size}",
                    _ms(r["cpu_ms_per_event"]),
                    _ms(r["wall_ms_per_event"]),
                    _rate(r["events_per_s"]),
                    _ms(r["batch_wall_ms_p50"]),
                ]
            )
    kinds = [i.strip() for i in indexes.split(",") if i.strip()]
    if unknown := [i for i in kinds if i not in INDEXES]:
        raise typer.BadParameter(f"unknown index {unknown}; known: {', '.join(INDEXES)}", param_hint="--indexes")
    if items:
        section["scale"] = bench_scale(
            [int(n) for n in _float_list(items)],
            settings,
            indexes=kinds,
            warmup=scale_warmup,
            events=scale_events,
        )
        for n, by_index in section["scale"].items():
            for index, r in by_index.items():
                rows.append(
                    [
                        f"{int(n):,} synthetic items, {index}, batch {PROFILE_BATCH}",
                        _ms(r["cpu_ms_per_event"]),
                        _ms(r["wall_ms_per_event"]),
                        _rate(r["events_per_s"]),
                        _ms(r["batch_wall_ms_p50"]),
                        f"{r['rss_mb']:,.0f} MiB ({r['catalog_mb']:,.0f} catalog)",
                    ]
                )
    if "profile" in section:
        _profile_table(section["profile"], section["profile_batch"])
    title = f"core: Recommender.process alone, policy {settings.policy}, K={settings.k}, one core"
    columns = ["run", "CPU ms/event", "wall ms/event", "events/s", "batch p50 ms"]
    if "scale" in section:
        columns.append("RSS")
        rows = [[*row, ""] if len(row) < len(columns) else row for row in rows]
    publish(out, "core", section, title, columns, rows)


def _profile_table(profile: list[dict[str, Any]], batch: int, top: int = 10) -> None:
    table = Table(title=f"core profile at batch {batch}: top {top} by own time (cProfile, inflated), ms per event")
    for i, column in enumerate(["function", "where", "own ms", "cumulative ms", "calls"]):
        table.add_column(column, justify="left" if i < 2 else "right")
    for r in profile[:top]:
        table.add_row(
            r["function"][:48],
            r["where"].rsplit("/", 1)[-1],
            _ms(r["tottime_ms_per_event"]),
            _ms(r["cumtime_ms_per_event"]),
            f"{r['calls_per_event']:,.2f}",
        )
    console.print(table)


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _worker_rows(section: dict[str, Any], label: str) -> list[Row]:
    """Table rows of one worker's phases: flat out, the ceilings beside it (if run), each offered load."""
    tp = section["throughput"]
    rows: list[Row] = [
        [
            f"{label}worker, flat out",
            _rate(tp["events_per_s"]),
            _ms(tp["latency_p50_ms"]),
            _ms(tp["latency_p99_ms"]),
            _ms(tp.get("worker_cpu_ms_per_event")),
            f"{tp['events']:,}",
        ]
    ]
    for kind, c in section.get("ceilings", {}).items():
        ratio = section["ratio"][kind]
        rows.append(
            [
                f"{kind} pass-through (ours = {ratio:.1%})",
                _rate(c["events_per_s"]),
                "",
                "",
                _ms(c["cpu_ms_per_event"]),
                f"{c['events']:,}",
            ]
        )
    for rate, ph in section["latency"].items():
        if "timed_out" in ph:
            rows.append([f"{label}worker at {rate} events/s offered", "timed out", "", "", "", ""])
            continue
        rows.append(
            [
                f"{label}worker at {rate} events/s offered",
                _rate(ph["events_per_s"]),
                _ms(ph["latency_p50_ms"]),
                _ms(ph["latency_p99_ms"]),
                _ms(ph.get("worker_cpu_ms_per_event")),
                f"{ph['events']:,}",
            ]
        )
        probe = ph["probe"]
        rows.append(
            [
                f"  probe, no worker, {rate}/s",
                "",
                _ms(probe["latency_p50_ms"]),
                _ms(probe["latency_p99_ms"]),
                "",
                f"{probe['events']:,}",
            ]
        )
    return rows


@app.command()
def pipeline(
    out: Path | None = PART_OUT,
    events: int = typer.Option(10_000, help="events for the throughput phase (and the ceilings)"),
    rates: str = typer.Option("500,1000,2000", help="offered loads for the latency phases, events/s"),
    duration: float = typer.Option(10.0, help="seconds of offered load per rate"),
    bootstrap: str = typer.Option("", help="use this Kafka instead of starting a throw-away broker"),
    ceilings: bool = typer.Option(True, help="also run the aiokafka and Faust pass-throughs"),
    exactly_once: bool = typer.Option(False, help="then the same phases with an exactly-once worker, side by side"),
) -> None:
    """One worker end to end through local Kafka: throughput, latency at fixed loads, pass-through ceilings."""
    from streams.bench.pipeline import bench_pipeline
    from streams.settings import Settings

    section = bench_pipeline(
        Settings(),
        events=events,
        rates=_float_list(rates),
        duration_s=duration,
        bootstrap=bootstrap or None,
        ceilings=ceilings,
        exactly_once=exactly_once,
    )
    rows = _worker_rows(section, "")
    if "exactly_once" in section:
        rows += _worker_rows(section["exactly_once"], f"exactly-once ({section['ratio']['exactly_once']:.1%} of it): ")
    title = (
        f"pipeline: one worker, policy {section['policy']}, K={section['k']}, {section['items']:,} items, "
        f"{section['partitions']} partitions"
    )
    columns = ["run", "events/s", "p50 ms", "p99 ms", "CPU ms/event", "events"]
    publish(out, "pipeline", section, title, columns, rows)


@app.command()
def encoder(
    out: Path | None = PART_OUT,
    device: str = typer.Option("cpu", help="LocalEncoder's torch device: cpu, cuda, cuda:1 ..."),
    triton_url: str = typer.Option("", help="a running Triton's gRPC host:port (default: start a CPU one here)"),
    batches: str = typer.Option("1,32,128", help="batch sizes"),
    seconds: float = typer.Option(5.0, help="seconds of requests per encoder and batch size"),
    concurrency: int = typer.Option(1, help="requests in flight at once"),
) -> None:
    """TritonEncoder vs LocalEncoder on MovieLens titles: texts/s and per-request latency, same run."""
    from streams.bench.encoder import bench_encoder
    from streams.demo.movielens import load_movielens
    from streams.settings import Settings

    texts = [item.title for item in load_movielens(1).items]
    section = bench_encoder(
        texts,
        Settings(),
        triton_url=triton_url or None,
        device=device,
        batches=[int(b) for b in _float_list(batches)],
        seconds=seconds,
        concurrency=concurrency,
    )
    rows: list[Row] = []
    for batch in section["results"]["local"]:
        for name in ("local", "triton"):
            r = section["results"][name][batch]
            overhead = f"{section['overhead'][batch]:+.0%}" if name == "triton" else ""
            rows.append(
                [f"{name}, batch {batch}", _rate(r["texts_per_s"]), _ms(r["p50_ms"]), _ms(r["p99_ms"]), overhead]
            )
    title = f"encoder: MiniLM on {section['device']}, {section['mean_text_chars']:.0f}-char titles"
    publish(out, "encoder", section, title, ["encoder", "texts/s", "p50 ms", "p99 ms", "Triton overhead"], rows)


@app.command()
def memory(
    out: Path | None = PART_OUT,
    users: int = typer.Option(100_000, help="users held in memory for the RSS figure"),
) -> None:
    """Serialized user state per user (real MovieLens histories) and RSS per 100k users."""
    from streams.bench.catalog import embedded_movielens
    from streams.bench.memory import bench_memory
    from streams.settings import Settings

    settings = Settings()
    section = bench_memory(embedded_movielens(settings.cache_dir), settings, users=users)
    rows: list[Row] = []
    for label, s in [
        ("all users, final", section["state_bytes"]),
        *((f"after event {n}", s) for n, s in section["state_bytes_after_n_events"].items()),
    ]:
        rows.append([label, f"{s['users']:,.0f}", f"{s['mean']:,.0f}", f"{s['p50']:,.0f}", f"{s['max']:,.0f}"])
    rss = section["rss"]
    rows.append(
        [
            f"RSS for {rss['users']:,} users",
            "",
            f"{rss['bytes_per_user']:,.0f}",
            "",
            f"{rss['mib_per_100k_users']:,.1f} MiB/100k",
        ]
    )
    title = f"memory: serialized user state ({section['interests']} interests, history {section['history_size']})"
    publish(out, "memory", section, title, ["state", "users", "mean bytes", "p50 bytes", "max bytes"], rows)


@app.command()
def snapshot(
    out: Path | None = PART_OUT,
    warmup: int = typer.Option(20_000, help="MovieLens events replayed at batch 100 before measuring"),
    events: int = typer.Option(2_000, help="serving cost: timed events per run (the same ones for each)"),
    repeats: int = typer.Option(5, help="publish-and-load rounds per run (medians)"),
    rounds: int = typer.Option(3, help="serving cost: alternating rounds of role both and role serve"),
    partitions: int = typer.Option(4, help="serving cost: input partitions (one lessons record each per batch)"),
    movielens: bool = typer.Option(True, help="the MovieLens run (--no-movielens: only the --items scale runs)"),
    items: str = typer.Option("", help="scale: synthetic catalogs of these sizes, e.g. 1000000 (a few minutes)"),
    scale_users: int = typer.Option(100_000, help="scale: users with MF factors"),
    scale_repeats: int = typer.Option(3, help="scale: publish-and-load rounds"),
) -> None:
    """The shared models' snapshots: size, publish and load time; serving cost with and without learning."""
    from streams.bench import in_child
    from streams.bench.core import movielens_workload, progress_bar
    from streams.bench.snapshot import bench_snapshot
    from streams.settings import Settings

    settings = Settings()
    section: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}
    if movielens:
        workload = movielens_workload(settings)
        with progress_bar(console) as progress:
            section = bench_snapshot(workload, settings, warmup, events, repeats, rounds, partitions, progress)
        runs[f"{workload.name} ({len(workload.items):,} items)"] = section["snapshot"]
        _serving_table(section["serving"])
    if items:
        args = {"users": scale_users, "repeats": scale_repeats}
        section["scale"] = {
            str(n): in_child("streams.bench.snapshot", {**args, "items": n}) for n in map(int, _float_list(items))
        }
        runs.update({f"{int(n):,} synthetic items": r for n, r in section["scale"].items()})
    title = f"snapshot: the shared models published and loaded, median of {repeats} (scale {scale_repeats}), one core"
    publish(out, "snapshot", section, title, ["", *runs], _snapshot_rows(list(runs.values())))


def _snapshot_rows(runs: list[dict[str, Any]]) -> list[Row]:
    def row(label: str, value: Callable[[dict[str, Any]], str]) -> Row:
        return [label, *(value(r) for r in runs)]

    def step(name: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: _ms(r["median_ms"][name])

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} MiB"

    return [
        row("snapshot size", lambda r: f"{r['payload_bytes'] / 1e6:,.1f} MB"),
        row("  of which co-visitation / MF", lambda r: f"{r['array_bytes']['covisit'] / 1e6:,.1f} / "
            f"{r['array_bytes']['mf'] / 1e6:,.1f} MB"),
        row("chunks (900 KB)", lambda r: f"{r['chunks']:,}"),
        row("to the broker, every interval", lambda r: f"{r['broker_mb_per_s']:,.2f} MB/s at "
            f"{r['snapshot_interval_s']:.0f} s"),
        row("learner: state() ms (its lock)", step("state")),
        row("learner: encode() ms", step("encode")),
        row("learner: to_chunks() ms (SHA-256)", step("to_chunks")),
        row("publish, total ms (before Kafka)", lambda r: _ms(r["publish_ms"])),
        row("worker: Assembler ms (SHA-256)", step("assemble")),
        row("worker: decode() ms", step("decode")),
        row("worker: remap ms (catalog lock)", step("remap")),
        row("worker: load_state ms (off the loop)", step("load_state")),
        row("worker: Recommender.use ms (lock)", step("use")),
        row("load, total ms (after Kafka)", lambda r: _ms(r["load_ms"])),
        row("worker: lock held per snapshot ms", lambda r: _ms(r["lock_ms"]["worker"])),
        row("other rows: remap + load_state ms", lambda r: _ms(r["median_ms"]["remap_other_rows"]
            + r["median_ms"]["load_state_other_rows"])),
        row("peak RSS growth: publish / load", lambda r: f"{mib(r['peak_growth_mb']['publish'])} / "
            f"{mib(r['peak_growth_mb']['load'])}"),
        row("models loaded byte-equal", lambda r: "yes" if r["byte_equal"] else "NO"),
    ]


def _serving_table(serving: dict[str, Any]) -> None:
    title = (f"snapshot: serving cost at batch {serving['batch_size']}, {serving['events']:,} events, CPU ms per event "
             f"(role both learns in place; role serve encodes lessons for {serving['partitions']} partitions)")
    table = Table(title=title)
    for i, column in enumerate(["round", "both", "serve", "serve / both"]):
        table.add_column(column, justify="left" if i == 0 else "right")
    cpu = serving["cpu_ms_per_event"]
    for i, (both, serve, ratio) in enumerate(zip(cpu["both"], cpu["serve"], serving["ratio_by_round"], strict=True)):
        table.add_row(str(i + 1), _ms(both), _ms(serve), f"{ratio:.3f}")
    table.add_row("median", _ms(serving["both_cpu_ms_per_event"]), _ms(serving["serve_cpu_ms_per_event"]),
                  f"{serving['serve_over_both']:.3f}")
    console.print(table)
    console.print(f"lessons: {serving['lessons_bytes_per_event']:,.0f} bytes per event "
                  f"({serving['lessons_records']:,} records); following them costs another worker "
                  f"{_ms(serving['follow_cpu_ms_per_event'])} ms per event")


PARTS: dict[str, Callable[..., None]] = {
    "rerank": rerank,
    "wire": wire,
    "core": core,
    "memory": memory,
    "snapshot": snapshot,
    "encoder": encoder,
    "pipeline": pipeline,
}


@app.command("all")
def run_all(out: Path = OUT) -> None:
    """Every part with its defaults, one after the other."""
    for name, part in PARTS.items():
        console.rule(name)
        # called from Python, a command's parameters default to typer.Option objects: pass their values
        defaults = {p: v.default.default for p, v in inspect.signature(part).parameters.items()}
        part(**{**defaults, "out": out})
