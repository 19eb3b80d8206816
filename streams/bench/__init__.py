"""``streamrec bench``: speed and memory figures, written to ``bench.json`` (never asserted in tests).

Every result names the machine, the commit and the date, and compares side by side within one run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "machine": platform.machine(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def merge_section(out: Path, part: str, section: dict[str, Any]) -> dict[str, Any]:
    """Write ``section`` (with :func:`environment`) as ``out[part]``, keeping the other parts; return it.

    Parts run at different times (and commits), so each carries its own environment.
    """
    report = {"environment": environment(), **section}
    existing = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**existing, part: report}, indent=2) + "\n")
    return report


def percentiles_ms(seconds: Any) -> dict[str, float]:
    """``{"p50_ms", "p99_ms", "mean_ms"}`` of a sequence of durations in seconds."""
    import numpy as np

    ms = 1e3 * np.asarray(seconds, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def rss_bytes(field: str = "VmRSS", pid: int | None = None) -> int:
    """A process's (default: this one's) resident memory now (``VmRSS``) or at its peak (``VmHWM``), in bytes."""
    status = Path(f"/proc/{'self' if pid is None else pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in {status}")


def in_child(module: str, args: dict[str, Any]) -> dict[str, Any]:
    """``python -m module '<args as JSON>'`` in a fresh interpreter (so its memory is its own; its progress
    goes to stderr): the JSON object it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
