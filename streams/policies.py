"""Named recommendation policies and the per-user A/B assignment between them.

A policy is a reranker plus a share of exploration slots. Users are split between policies
by a salted hash of their id, so a user always sees the same policy (until the salt changes)
and every message says which policy and which arm produced it.

>>> split = parse_split("mmr=1,dpp_explore=3")
>>> split
{'mmr': 0.25, 'dpp_explore': 0.75}
>>> assign("user-42", split, salt="exp-1") == assign("user-42", split, salt="exp-1")
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

from streams.rerank import DPP, MMR, Calibrated, Reranker, TopK

PolicyName = Literal["relevance", "mmr", "dpp", "calibrated", "dpp_explore"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)


@dataclass(frozen=True)
class Policy:
    name: str
    reranker: Reranker
    explore_share: float = 0.0


def make_policy(
    name: str,
    *,
    mmr_lambda: float = 0.7,
    dpp_theta: float = 0.7,
    calibration_lambda: float = 0.5,
    explore_share: float = 0.2,
) -> Policy:
    """The policy a name stands for, with its parameters.

    >>> make_policy("dpp_explore", explore_share=0.3).explore_share
    0.3
    """
    rerankers: dict[str, Reranker] = {
        "relevance": TopK(),
        "mmr": MMR(mmr_lambda),
        "dpp": DPP(dpp_theta),
        "calibrated": Calibrated(calibration_lambda),
        "dpp_explore": DPP(dpp_theta),
    }
    if name not in rerankers:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    return Policy(name, rerankers[name], explore_share if name.endswith("_explore") else 0.0)


def parse_split(spec: str) -> dict[str, float]:
    """``"a=1,b=3"`` -> ``{"a": 0.25, "b": 0.75}`` (weights need not sum to 1)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {name!r} in split {spec!r}; known: {', '.join(POLICY_NAMES)}")
        w = float(weight) if weight else 1.0
        if w < 0:
            raise ValueError(f"negative weight for {name!r} in split {spec!r}")
        weights[name] = weights.get(name, 0.0) + w
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"split {spec!r} gives no policy any weight")
    return {name: w / total for name, w in weights.items()}


def assign(user_id: str, split: dict[str, float], salt: str) -> str:
    """The policy of ``user_id``: stable for a given salt, spread uniformly by the weights."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64
    cumulative = 0.0
    for name, weight in split.items():
        cumulative += weight
        if point < cumulative:
            return name
    return next(reversed(split))  # rounding left point just above the last boundary
