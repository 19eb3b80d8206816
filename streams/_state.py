"""Versioned JSON checkpoints for the small models that are not numpy-heavy (bandits, feedback)."""

from __future__ import annotations

import json
from typing import Any


def dump_state(version: int, state: dict[str, Any]) -> bytes:
    """Compact JSON with a ``version`` field.

    >>> load_state(dump_state(1, {"a": [1, 2]}), 1, "demo")
    {'version': 1, 'a': [1, 2]}
    """
    return json.dumps({"version": version, **state}, separators=(",", ":")).encode("utf-8")


def load_state(raw: bytes, version: int, what: str) -> dict[str, Any]:
    """The state :func:`dump_state` wrote; refuses other versions rather than misreading them."""
    state: dict[str, Any] = json.loads(raw)
    if state.get("version") != version:
        raise ValueError(f"unknown {what} state version {state.get('version')}")
    return state
