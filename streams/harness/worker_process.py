"""A streamrec worker in a child process, configured through its environment like in production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.local import _process
from streams.settings import Settings, env_var_name


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``STREAMREC_*`` variables that reproduce ``settings`` in another process (a tuple as the JSON
    list pydantic-settings reads).

    >>> settings_env(Settings(gc_thresholds=(700, 10, 10), k=5))["STREAMREC_GC_THRESHOLDS"]
    '[700, 10, 10]'
    """
    return {
        env_var_name(name): json.dumps(value) if isinstance(value, tuple | list) else str(value)
        for name, value in settings.model_dump().items()
    }


class WorkerProcess:
    """``streamrec worker`` as a subprocess; :meth:`status` reads its HTTP status page."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def status_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}/streamrec/status/"

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.status_url, timeout=2) as resp:
                result: dict[str, Any] = json.load(resp)
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def wait_until(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll the status page until ``predicate(status)`` holds; fail early if the worker died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode} waiting for {what}:\n{self.log_tail()}")
            st = self.status()
            if st is not None and predicate(st):
                return st
            time.sleep(0.2)
        raise TimeoutError(f"worker not {what} after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return _process.tail(self.log_path, lines, "<no log>")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (Faust shuts down cleanly and commits), SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _process.terminate(self.proc.pid, timeout_s, proc=self.proc)
            self.proc.wait()  # reaped already, unless even SIGKILL has not taken yet
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
