"""Process plumbing shared by the local launchers (Kafka, Triton) and the worker harness.

A launched server runs detached (its own session) and is known by a pidfile, so a later process (the
CLI in a new shell) can find and stop it; the pidfile is trusted only while the pid's command line
still names the server, since the OS may have given a stale pid to another program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["pid_alive", "read_pidfile", "spawn", "stop", "tail", "terminate", "wait_exit"]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A dead child of this very process stays a zombie until reaped and still "exists" for kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def read_pidfile(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and ``marker`` is part of its command line."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    with contextlib.suppress(OSError):  # no /proc (not Linux): trust the pidfile
        if marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def spawn(
    cmd: Sequence[str],
    log_file: Path,
    pidfile: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr in ``log_file`` (truncated) and record its pid in ``pidfile``."""
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            # own session: survives the CLI process and a Ctrl-C in its shell, and leads its own group
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def wait_exit(pid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``pid`` is gone; ``proc``, our own child of that pid, is reaped on the way."""
    own = proc if proc is not None and proc.pid == pid else None
    deadline = time.monotonic() + timeout_s
    while True:
        if own is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                own.wait(timeout=0.1)
        if not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        if own is None:
            time.sleep(0.1)


def terminate(
    pid: int, timeout_s: float, *, proc: subprocess.Popen[bytes] | None = None, kill_group: bool = False
) -> bool:
    """SIGTERM ``pid`` (a clean shutdown), SIGKILL it after ``timeout_s``; True once it has exited.

    SIGTERM goes to ``pid`` alone so that it stops its own children; ``kill_group`` makes the SIGKILL
    hit its whole process group (``pid`` leads it, see :func:`spawn`), children included.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_exit(pid, timeout_s, proc):
        return True
    _sigkill(pid, kill_group)
    return wait_exit(pid, 10, proc)  # only a process stuck in the kernel outlives SIGKILL


def _sigkill(pid: int, group: bool) -> None:
    if group:
        try:
            os.killpg(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            pass  # no group led by pid: kill the process alone
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(
    pidfile: Path,
    marker: str,
    timeout_s: float,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    kill_group: bool = False,
) -> None:
    """:func:`terminate` the process of ``pidfile`` (see :func:`read_pidfile`) if any, then remove the pidfile."""
    pid = read_pidfile(pidfile, marker)
    if pid is not None:
        terminate(pid, timeout_s, proc=proc, kill_group=kill_group)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # reap our child, also when it died before the pidfile was read
    pidfile.unlink(missing_ok=True)


def tail(path: Path, lines: int, missing: str) -> str:
    """The last ``lines`` lines of ``path``, or ``missing`` when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return missing
