"""``streamrec kafka up|down|status``: a real local Apache Kafka broker under ``<cache_dir>/kafka/broker``.

The broker runs detached from the shell that started it; ``down`` and ``status`` find it again
through the pidfile and the ports recorded in its home.
"""

from __future__ import annotations

import time

import typer

from streams.local.kafka import KafkaBroker, ensure_jars, libs_dir, local_home
from streams.settings import Settings

app = typer.Typer(help="Run a real single-node Apache Kafka broker (KRaft).", no_args_is_help=True)


def _existing() -> KafkaBroker:
    cache_dir = Settings().cache_dir
    # down/status never need the jars, so don't fetch them here
    return KafkaBroker.from_home(local_home(cache_dir), libs_dir(cache_dir))


@app.command()
def up(
    port: int = typer.Option(9092, help="Client (PLAINTEXT) port on 127.0.0.1"),
    controller_port: int = typer.Option(9093, help="KRaft controller port on 127.0.0.1"),
    timeout: float = typer.Option(90.0, help="Seconds to wait until the broker serves clients"),
) -> None:
    """Start the broker (fetching the jars with Maven on first use); no-op if it already runs."""
    cache_dir = Settings().cache_dir
    broker = KafkaBroker(local_home(cache_dir), ensure_jars(cache_dir), port=port, controller_port=controller_port)
    t0 = time.monotonic()
    try:
        broker.start(timeout_s=timeout)
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"kafka running at {broker.bootstrap} (pid {broker.pid()}, {time.monotonic() - t0:.1f}s)")


@app.command()
def down(timeout: float = typer.Option(30.0, help="Seconds before SIGTERM becomes SIGKILL")) -> None:
    """Stop the broker started by ``up`` (its data stays for the next ``up``)."""
    broker = _existing()
    was = broker.pid()
    broker.stop(timeout_s=timeout)
    typer.echo(f"kafka stopped (pid {was})" if was is not None else "kafka was not running")


@app.command()
def status() -> None:
    """Print running/stopped and the bootstrap address; exit code 1 when stopped."""
    broker = _existing()
    if broker.is_running():
        typer.echo(f"running {broker.bootstrap} (pid {broker.pid()}, home {broker.home})")
        return
    typer.echo(f"stopped {broker.bootstrap}")
    raise typer.Exit(1)
