"""The ``streamrec`` command line: thin wrappers over the packages."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from streams.cli import evaluate, kafka, triton

app = typer.Typer(help="streamrec: real-time diversified recommendations on Kafka.", no_args_is_help=True)
app.add_typer(kafka.app, name="kafka")
app.add_typer(triton.app, name="triton")
app.command()(evaluate.evaluate)


@app.command()
def worker(loglevel: str = typer.Option("info", help="Faust log level")) -> None:
    """Run one streaming worker, configured by STREAMREC_* environment variables."""
    import faust
    from threadpoolctl import threadpool_limits

    from streams.app import create_app
    from streams.settings import Settings

    # One core per worker process: the per-event matrix work is small, and BLAS threads
    # spinning beside the event loop, the broker and the encoder cost more than they give.
    # Scale out with more workers (and partitions) instead.
    threadpool_limits(1)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=loglevel.upper())
    faust.Worker(create_app(settings), loglevel=loglevel).execute_from_commandline()


@app.command()
def demo(
    limit: int = typer.Option(0, help="Stream only the first N ratings (0 = all 100,004)"),
    encoder: str = typer.Option("", help="'triton' or 'local' (default: STREAMREC_ENCODER)"),
    rate: float = typer.Option(150.0, help="Offered load in events/s (0 = as fast as the producer goes)"),
    show: int = typer.Option(3, help="How many users' lists to print"),
) -> None:
    """Stream MovieLens through local Kafka (+ Triton) and a worker; show lists and latency."""
    from streams.demo.run import run_demo

    run_demo(limit=limit or None, encoder=encoder or None, rate=rate, show=show)


@app.command()
def bench(
    part: str = typer.Argument("rerank", help="What to measure: rerank"),
    out: str = typer.Option("bench.json", help="Where to write the JSON results"),
    n: int = typer.Option(500, help="rerank: candidates"),
    k: int = typer.Option(20, help="rerank: list length"),
    d: int = typer.Option(384, help="rerank: embedding dimension"),
    repeats: int = typer.Option(400, help="rerank: timed runs per algorithm"),
) -> None:
    """Measure and print a table; results (with machine, commit and date) go to ``--out``."""
    import json

    from rich.console import Console
    from rich.table import Table

    from streams.bench import environment
    from streams.bench.rerank import bench_rerank

    if part != "rerank":
        raise typer.BadParameter(f"unknown part {part!r}; available: rerank")
    results = bench_rerank(n=n, k=k, d=d, repeats=repeats)
    report = {"environment": environment(), "rerank": {"n": n, "k": k, "d": d, "results": results}}
    path = Path(out)
    existing = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**existing, **report}, indent=2) + "\n")
    table = Table(title=f"rerank: N={n}, K={k}, d={d}, one core ({report['environment']['commit']})")
    for column in ("algorithm", "median ms", "p99 ms", "runs"):
        table.add_column(column, justify="left" if column == "algorithm" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['median_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['repeats']:.0f}")
    Console().print(table)
    Console().print(f"written to {out}")


def main() -> None:
    app()
