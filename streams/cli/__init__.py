"""The ``streamrec`` command line: thin wrappers over the packages."""

from __future__ import annotations

import gc
import logging

import typer

from streams.cli import bench, evaluate, kafka, triton

app = typer.Typer(help="streamrec: real-time diversified recommendations on Kafka.", no_args_is_help=True)
app.add_typer(kafka.app, name="kafka")
app.add_typer(triton.app, name="triton")
app.add_typer(bench.app, name="bench")
app.command()(evaluate.evaluate)


@app.command()
def worker(
    loglevel: str = typer.Option("info", help="Faust log level"),
    role: str = typer.Option(
        "", help="serve, learn or both (default: STREAMREC_ROLE, else both): serving workers make the lists "
        "from the learner's snapshots, one learner learns the shared models from all of them"
    ),
) -> None:
    """Run one streaming worker, configured by STREAMREC_* environment variables."""
    import faust
    from threadpoolctl import threadpool_limits

    from streams.app import create_app
    from streams.settings import Settings

    # One core per worker process: the per-event matrix work is small, and BLAS threads
    # spinning beside the event loop, the broker and the encoder cost more than they give.
    # Scale out with more workers (and partitions) instead.
    threadpool_limits(1)
    settings = Settings(**({"role": role} if role else {}))  # type: ignore[arg-type]  # pydantic checks the value
    gc.set_threshold(*settings.gc_thresholds)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=loglevel.upper())
    faust.Worker(create_app(settings), loglevel=loglevel).execute_from_commandline()


@app.command()
def demo(
    limit: int = typer.Option(0, help="Stream only the first N ratings (0 = all 100,004)"),
    encoder: str = typer.Option("", help="'triton' or 'local' (default: STREAMREC_ENCODER)"),
    rate: str = typer.Option(
        "auto", help="Offered load: 'auto' (paced to what the worker keeps up with, a p99 goal of 500 ms), "
        "N events/s, or 0 (as fast as the producer goes)"
    ),
    show: int = typer.Option(3, help="How many users' lists to print"),
) -> None:
    """Stream MovieLens through local Kafka (+ Triton) and a worker; show lists and latency."""
    from streams.demo.run import run_demo

    try:
        offered = None if rate == "auto" else float(rate)
    except ValueError:
        raise typer.BadParameter(f"{rate!r} is not 'auto' or a number of events/s", param_hint="--rate") from None
    if offered is not None and not offered >= 0:
        raise typer.BadParameter(f"{rate!r}: events/s cannot be negative", param_hint="--rate")
    run_demo(limit=limit or None, encoder=encoder or None, rate=offered, show=show)


def main() -> None:
    app()
