"""A real Prometheus server (Debian's ``prometheus`` package, ``make setup`` installs it) on 127.0.0.1.

Everything the server owns lives in ``home``: its TSDB in ``data/``, ``prometheus.log`` and
``prometheus.pid``.

>>> PrometheusServer(home=Path("/tmp/p"), config=Path("/tmp/p.yml"), port=19090).url
'http://127.0.0.1:19090'
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.local import _process

__all__ = ["PrometheusServer", "find_binary"]

HOST = "127.0.0.1"
_LOG = "prometheus.log"
_PID = "prometheus.pid"
_MARKER = "prometheus"


def find_binary(name: str) -> Path:
    """``prometheus`` or ``promtool`` on ``PATH``, or an error saying how to get them."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: run `make setup` (it installs Debian's prometheus package)")
    return Path(path)


@dataclass
class PrometheusServer:
    """One ``prometheus`` process with ``config``, listening on ``127.0.0.1:port``."""

    home: Path
    config: Path
    port: int = 9090
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / _LOG

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it is ready (config and rules loaded)."""
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(find_binary("prometheus")),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
        ]
        self._proc = _process.spawn(cmd, self.log_file, self.home / _PID)
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prometheus not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>`` and its ``data``; errors (a bad query too) raise with Prometheus' message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            body = json.load(exc)
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now (vector or scalar, as Prometheus returns it)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] in ("vector", "matrix") else [data]
        return result

    def log_tail(self, lines: int = 40) -> str:
        return _process.tail(self.log_file, lines, "<no log>")

    def stop(self, timeout_s: float = 30.0) -> None:
        _process.stop(self.home / _PID, _MARKER, timeout_s, proc=self._proc)
        self._proc = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
