"""``streamrec triton ...``: export the model repository, start/stop/inspect the local Triton server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.local.triton import TritonServer, local_home
from streams.settings import Settings

app = typer.Typer(help="Local Triton Inference Server serving the text encoder.", no_args_is_help=True)

# the state file lets `down`/`status` in a new shell find the ports that `up` used
_PORTS = "ports"


def _settings_grpc_port() -> int:
    return int(Settings().triton_url.rsplit(":", 1)[1])


def _server(
    repo: Path | None = None, grpc_port: int | None = None, http_port: int = 8000, metrics_port: int = 8002
) -> TritonServer:
    home = local_home(Settings().cache_dir)
    return TritonServer(
        home=home,
        model_repository=repo or home / "model_repository",
        grpc_port=grpc_port or _settings_grpc_port(),
        http_port=http_port,
        metrics_port=metrics_port,
        model=Settings().triton_model,
    )


@app.command()
def export(
    dest: Annotated[Path, typer.Argument(help="Folder to write the model repository into")],
    max_batch_size: Annotated[int, typer.Option(min=1, help="Triton max_batch_size")] = 128,
) -> None:
    """Write the Triton model repository (CPU config + configs/gpu.pbtxt, weights included)."""
    from encoders import export_model_repository

    out = export_model_repository(dest, model_name=Settings().triton_model, max_batch_size=max_batch_size)
    typer.echo(f"model repository written to {out}")


@app.command()
def up(
    repo: Annotated[
        Path | None, typer.Option(help="Model repository [default: <cache>/triton/model_repository]")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (default: the port of STREAMREC_TRITON_URL)")] = None,
    http_port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    metrics_port: Annotated[int, typer.Option(help="Metrics port")] = 8002,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for the model to be ready")] = 180,
) -> None:
    """Start the server in the background and wait until the encoder model is ready."""
    server = _server(repo, grpc_port, http_port, metrics_port)
    if server.is_running():
        typer.echo(f"already running from {server.home}")
        raise typer.Exit(0)
    if repo is None and server.ensure_model_repository():
        typer.echo(f"exported the model repository to {server.model_repository}")
    try:
        server.start(timeout_s=timeout_s)
    except (RuntimeError, TimeoutError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    (server.home / _PORTS).write_text(f"{server.grpc_port} {http_port} {metrics_port}\n")
    typer.echo(f"Triton ready: gRPC {server.url}, HTTP {http_port}, log {server.log_file}")


@app.command()
def down() -> None:
    """Stop the server that `up` started (from any shell)."""
    server = _server()
    if not server.is_running():
        typer.echo("not running")
        return
    server.stop()
    (server.home / _PORTS).unlink(missing_ok=True)
    typer.echo("stopped")


@app.command()
def status() -> None:
    """Say whether the server runs and whether the encoder model answers; exit 1 if not running."""
    server = _server()
    if not server.is_running():
        typer.echo("not running")
        raise typer.Exit(1)
    try:
        grpc_port = int((server.home / _PORTS).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        grpc_port = server.grpc_port
    server.grpc_port = grpc_port
    import asyncio

    from encoders import TritonEncoder

    async def ready() -> bool:
        async with TritonEncoder(server.url, model=server.model, timeout_s=5) as enc:
            return await enc.ready()

    state = "ready" if asyncio.run(ready()) else "not ready"
    typer.echo(f"running (pid file {server.pid_file}), model {server.model!r} {state} at {server.url}")
