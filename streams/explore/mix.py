"""Give a share of a list's slots to exploration."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streams.contracts import RecommendedItem
from streams.explore.base import Bandit, Features, Keys

EXPLORE = "explore"


def explore_slots(share: float, k: int) -> int:
    """How many of ``k`` slots exploration gets: ``share * k`` rounded half up.

    So ``share = 0.1`` gives one slot of ten, and a list of ``k`` explores only when
    ``share >= 1 / (2k)``. The tiny epsilon keeps ``0.3 * 10 = 3.0000000000000004`` at 3.

    >>> explore_slots(0.1, 10), explore_slots(0.15, 10), explore_slots(0.04, 10), explore_slots(1.0, 3)
    (1, 2, 0, 3)
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    return min(k, math.floor(share * k + 0.5 + 1e-9))


def fill_explore(
    exploit: Sequence[RecommendedItem],
    explore_pool: Sequence[str],
    share: float,
    k: int,
    bandit: Bandit,
    rng: np.random.Generator | None = None,
    *,
    scores: Sequence[float] | None = None,
    context: Features | None = None,
) -> list[RecommendedItem]:
    """The exploit list with its last :func:`explore_slots` slots given to bandit-chosen items.

    The tail is where exploration costs the least attention, and keeping it at fixed positions
    keeps position bias the same for every explored item, so their rewards are comparable.
    The first ``k - m`` exploit items keep their order. Explore items come from
    ``explore_pool`` minus anything in ``exploit``, marked ``reason="explore"``, in the
    bandit's order, with their ``scores`` entry (aligned with the pool) or 0. ``context``
    holds one feature row per pool entry for contextual bandits.

    With too few fresh pool items the rest of the slots go back to exploit items; with too
    few exploit items exploration fills the rest; so the list has ``k`` distinct items
    whenever the two together have ``k``. ``share = 0`` is the exploit list cut to ``k``,
    and the bandit is not asked. ``exploit`` must hold distinct ids.

    >>> from streams.explore.thompson import ThompsonSampling
    >>> exploit = [RecommendedItem(item_id=i, score=1.0, reason="similar") for i in "abcd"]
    >>> out = fill_explore(exploit, ["b", "x", "y"], 0.5, 4, ThompsonSampling(), np.random.default_rng(0))
    >>> [i.item_id for i in out[:2]], sorted(i.item_id for i in out[2:]), {i.reason for i in out[2:]}
    (['a', 'b'], ['x', 'y'], {'explore'})
    """
    shown = {item.item_id for item in exploit}
    first: dict[str, int] = {}  # each fresh id's first pool row, for its score and features
    for i, arm in enumerate(explore_pool):
        if arm not in shown:
            first.setdefault(arm, i)
    arms, rows = list(first), list(first.values())
    ctx = None if context is None else np.asarray(context)[rows]
    [(kept, chosen)] = explore_lists([len(exploit)], [arms], [share], k, bandit, [ctx], [rng])
    extra = [
        RecommendedItem(item_id=a, score=0.0 if scores is None else float(scores[first[a]]), reason=EXPLORE)
        for a in chosen
    ]
    return list(exploit[:kept]) + extra


def explore_lists(
    exploit: Sequence[int],
    arms: Sequence[Sequence[str]],
    shares: Sequence[float],
    k: int,
    bandit: Bandit,
    contexts: Sequence[Features | None],
    rngs: Sequence[np.random.Generator | None],
    keys: Sequence[Keys] | None = None,
) -> list[tuple[int, list[str]]]:
    """:func:`fill_explore` of many lists by their sizes: per list, how many of its ``exploit[i]``
    items lead it and the explore arms that follow them. ``arms[i]`` are the fresh pool ids (distinct,
    none in the exploit list), ``contexts[i]`` their rows, ``keys[i]`` their keys (see
    :meth:`Bandit.select_many`); the bandit chooses for every list at once."""
    slots = [explore_slots(share, k) for share in shares]
    asked = [i for i, (m, offered) in enumerate(zip(slots, arms, strict=True)) if m and offered]
    chosen = dict(zip(asked, bandit.select_many(
        [arms[i] for i in asked], [max(slots[i], k - exploit[i]) for i in asked], [contexts[i] for i in asked],
        [rngs[i] for i in asked], None if keys is None else [keys[i] for i in asked],
    ), strict=True))
    out = []
    for i, (m, n) in enumerate(zip(slots, exploit, strict=True)):
        picks = chosen.get(i, [])
        kept = min(n, k - min(m, len(picks)))
        out.append((kept, picks[: k - kept]))
    return out
