"""A real Triton Inference Server (CPU, python backend) for development and tests.

The server binary comes from the ``nvidia-pytriton`` wheel unpacked into ``.venv-triton`` (``make``).
Everything the running server owns lives in one ``home`` folder: the python-backend copy with the stub
for this interpreter, ``triton.log`` and ``triton.pid``, so a later process can find and stop it.

>>> TritonServer(home=Path("/tmp/th"), model_repository=Path("/tmp/mr"), grpc_port=18001).url
'127.0.0.1:18001'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streams.local import _process

__all__ = ["TritonServer", "find_tritonserver"]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
_LOG = "triton.log"
_PID = "triton.pid"
# in the server's command line; guards the pidfile against a pid the OS gave to another program since
_MARKER = "tritonserver"


def find_tritonserver() -> Path:
    """Return the wheel's install folder: ``$STREAMREC_TRITON_HOME``, else ``<repo root>/.venv-triton``."""
    env = os.environ.get("STREAMREC_TRITON_HOME")
    candidates = [Path(env)] if env else [REPO_ROOT / ".venv-triton"]
    for root in candidates:
        if (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
            return root.resolve()
    raise RuntimeError(
        f"tritonserver not found in {', '.join(map(str, candidates))}: run `make` "
        "(it installs the nvidia-pytriton wheel into .venv-triton) or set STREAMREC_TRITON_HOME"
    )


def local_home(cache_dir: Path) -> Path:
    """The home of the developer server that ``streamrec triton up`` and the demo share."""
    return cache_dir / "triton"


@dataclass
class TritonServer:
    """One local ``tritonserver`` process serving ``model_repository`` on 127.0.0.1."""

    home: Path
    model_repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    model: str = "text_encoder"
    #: (certificate, key) PEM files: gRPC over TLS (HTTP, used for the readiness check, stays plain)
    grpc_tls: tuple[Path, Path] | None = None
    #: ``--model-config-name``, e.g. ``"gpu"`` for ``configs/gpu.pbtxt``; None: ``config.pbtxt``
    model_config_name: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def ensure_model_repository(self) -> bool:
        """Export the model repository unless its config is there already; True if it exported."""
        if (self.model_repository / self.model / "config.pbtxt").is_file():
            return False
        from encoders import export_model_repository  # pulls in the weights' package only when needed

        export_model_repository(self.model_repository, model_name=self.model)
        return True

    @property
    def url(self) -> str:
        """gRPC endpoint, ``host:port``, as :class:`encoders.TritonEncoder` takes it."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def log_file(self) -> Path:
        return self.home / _LOG

    @property
    def pid_file(self) -> Path:
        return self.home / _PID

    def _pid(self) -> int | None:
        return _process.read_pidfile(self.pid_file, _MARKER)

    def is_running(self) -> bool:
        """Whether the process named by the pidfile is alive (started here or by another process)."""
        return self._pid() is not None

    def _prepare_backend(self, triton_home: Path) -> Path:
        """Copy the python backend with the stub built for this Python version into ``home/backends``."""
        server = triton_home / "pytriton" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeError(f"the Triton python backend has no stub for Python {version} ({stub})")
        backends = self.home / "backends"
        shutil.copytree(server / "backends", backends, dirs_exist_ok=True)
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def _prepare_stub_env(self, triton_home: Path) -> Path:
        """Make ``home/stub-env``, a bare venv whose site-packages puts numpy<2 before this venv's.

        The stub embeds this Python in isolated mode (PYTHONPATH is ignored) and takes its
        sys.prefix from the first ``python3`` on PATH, so a venv is the way to hand it packages.
        Its pybind11 predates numpy 2 and garbles arrays under it (BYTES inputs decode as junk),
        hence numpy 1.26 from ``.venv-triton/stub-site`` ahead of the app's numpy 2; torch and
        transformers come from the app venv, added with addsitedir so its .pth files count too.
        """
        numpy1 = triton_home / "stub-site"
        if not (numpy1 / "numpy").is_dir():
            raise RuntimeError(f"numpy<2 for the Triton python stub is missing from {numpy1}: run `make`")
        env_dir = self.home / "stub-env"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        site = env_dir / "lib" / f"python{version}" / "site-packages"
        (env_dir / "bin").mkdir(parents=True, exist_ok=True)
        site.mkdir(parents=True, exist_ok=True)
        base = Path(getattr(sys, "_base_executable", sys.executable))
        cfg = [f"home = {base.parent}", "include-system-site-packages = false", f"version = {version}"]
        (env_dir / "pyvenv.cfg").write_text("\n".join(cfg) + "\n")
        python3 = env_dir / "bin" / "python3"
        python3.unlink(missing_ok=True)
        python3.symlink_to(base)
        app_sites = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
        lines = [str(numpy1), *(f"import site; site.addsitedir({p!r})" for p in app_sites)]
        (site / "streamrec_stub.pth").write_text("\n".join(lines) + "\n")
        return env_dir

    def _env(self, triton_home: Path, stub_env: Path) -> dict[str, str]:
        env = os.environ.copy()
        # LIBDIR first: the stub must load the libpython of this interpreter, not the system's one
        libs = [str(sysconfig.get_config_var("LIBDIR")), str(triton_home / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        env["PATH"] = os.pathsep.join([str(stub_env / "bin"), env.get("PATH", os.defpath)])
        env["HF_HUB_OFFLINE"] = "1"
        return env

    def start(self, timeout_s: float = 180) -> None:
        """Start the server, wait until the model is ready; on failure stop it and raise with the log tail."""
        if self.is_running():
            raise RuntimeError(f"a Triton server from {self.home} is already running (pid {self._pid()})")
        triton_home = find_tritonserver()
        self.home.mkdir(parents=True, exist_ok=True)
        backends = self._prepare_backend(triton_home)
        stub_env = self._prepare_stub_env(triton_home)
        cmd = [
            str(triton_home / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository.resolve()}",
            f"--backend-directory={backends}",
            "--exit-timeout-secs=5",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
        ]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        if self.grpc_tls is not None:
            cert, key = self.grpc_tls
            cmd += ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
        self._proc = _process.spawn(cmd, self.log_file, self.pid_file, env=self._env(triton_home, stub_env))
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        ready_url = f"http://{HOST}:{self.http_port}/v2/models/{self.model}/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self._proc.returncode}\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or model still loading (400)
            time.sleep(0.25)
        raise TimeoutError(f"model {self.model!r} not ready after {timeout_s}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return _process.tail(self.log_file, lines, "(no log)")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the server's process group, SIGKILL after ``timeout_s``; a no-op if it is not running."""
        # SIGTERM to the server alone: it unloads the model and stops its python-backend stubs itself;
        # the SIGKILL goes to its whole group (its own session), stubs included
        _process.stop(self.pid_file, _MARKER, timeout_s, proc=self._proc, kill_group=True)
        self._proc = None
