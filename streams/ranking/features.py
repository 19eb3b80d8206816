"""The ranker's features of every candidate of a batch's lists, as one ``[lists, candidates, features]`` tensor.

Each raw quantity gets a fixed transform to O(1) (logs of counts and times), and the signals whose
scale grows with the stream (popularity, co-visitation counts) also come as a share of the list's
largest, so a weight learned early still means the same later. The candidate's source is one-hot:
what retrieval already knew about it. A listwise softmax ignores what is the same for every candidate
of a list, so the user's own quantities (their event count) enter only multiplied with a candidate's
signal.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: The candidate sources, in the order of ``streams.recommender.SOURCES`` (a test keeps them equal).
SOURCE_NAMES = ("similar", "co-visited", "collaborative", "trending", "fresh")
FEATURES = (
    "cosine",  # to the user's nearest interest centroid
    "category",  # share of the user's category mix on the item's categories
    "category_last3",  # share of the categories of the user's last 3 items on the item's (what they did last)
    "popularity",  # log of the long-term decayed engagement count (Catalog.popularities)
    "popularity_share",  # of the list's most popular candidate
    "trending",  # log of the decayed engagement count the trending source ranks by: what is engaged with now
    "trending_share",
    "age",  # log of the seconds since the item appeared, a year reads 1
    "covisit",  # log of the co-engagement with the user's recent items (recency-weighted)
    "covisit_share",  # of the list's most co-engaged candidate
    "covisited",  # 1 if co-engaged with any recent item at all
    "covisit_last",  # log of the co-engagement with the user's last item alone
    "covisit_last_share",
    "covisit_last3",  # log of the co-engagement with the user's last 3 items (recency-weighted)
    "covisit_last3_share",
    "popularity_share_x_events",  # popularity_share x log of the user's events, 1,000 read 1
    "mf",  # matrix factorisation's score (a logit)
    "take_lift",  # how much more often than others the item was taken when a candidate (TakeRates.lift)
    *(f"from_{name}" for name in SOURCE_NAMES),
)
#: The ranker's starting weights, so lists make sense before its first lesson: what the user's items
#: are like (content: the only signal of a new catalog), what was co-engaged with them, a little
#: popularity.
PRIOR = {"cosine": 1.0, "covisit_share": 1.0, "popularity_share": 0.3}
_AGE_SCALE = math.log1p(365 * 86_400.0)
_EVENTS_SCALE = math.log1p(1000.0)


def _share(x: F64, valid: npt.NDArray[np.bool_]) -> F64:
    """``x`` over its line's largest valid value (0 where that is not positive)."""
    top = np.where(valid, x, 0.0).max(axis=1, keepdims=True)
    out: F64 = np.divide(x, top, out=np.zeros_like(x), where=top > 0)
    return out


def candidate_features(
    rows: npt.NDArray[np.int64],
    sources: npt.NDArray[np.int8],
    *,
    cosine: F32,
    category: F32,
    category_last3: F32,
    popularity: F64,
    trending: F64,
    age_s: F64,
    covisit: F64,
    covisit_last: F64,
    covisit_last3: F64,
    mf: F32,
    take_lift: F64,
    events: F64,
) -> F32:
    """The ``[B, P, len(FEATURES)]`` tensor of candidates ``rows`` ``[B, P]`` (``-1`` padding reads 0),
    from raw ``[B, P]`` quantities and each list's user's ``events`` count ``[B]``; ``sources`` indexes
    :data:`SOURCE_NAMES` (``-1``: none).

    >>> rows, src = np.array([[4, 7, -1]]), np.array([[1, 0, -1]], np.int8)
    >>> names = ("cosine", "category", "category_last3", "popularity", "trending", "mf", "take_lift")
    >>> raw = {k: np.array([[1.0, 0.5, 0.0]]) for k in names}
    >>> X = candidate_features(rows, src, age_s=np.zeros((1, 3)), covisit=np.array([[3.0, 0.0, 0.0]]),
    ...                        covisit_last=np.zeros((1, 3)), covisit_last3=np.zeros((1, 3)),
    ...                        events=np.array([1000.0]), **raw)
    >>> X.shape, X[0, :, FEATURES.index("popularity_share_x_events")].tolist(), X[0, 2].any()
    ((1, 3, 23), [1.0, 0.5, 0.0], np.False_)
    """
    valid = rows >= 0
    popularity, trending, covisit, covisit_last, covisit_last3, events = (
        np.maximum(x, 0.0) for x in (popularity, trending, covisit, covisit_last, covisit_last3, events)
    )
    popularity_share = _share(popularity, valid)
    cols = [
        cosine, category, category_last3, np.log1p(popularity), popularity_share,
        np.log1p(trending), _share(trending, valid),
        np.log1p(np.maximum(age_s, 0.0)) / _AGE_SCALE,
        np.log1p(covisit), _share(covisit, valid), (covisit > 0),
        np.log1p(covisit_last), _share(covisit_last, valid),
        np.log1p(covisit_last3), _share(covisit_last3, valid),
        popularity_share * (np.log1p(events) / _EVENTS_SCALE)[:, None],
        np.clip(mf, -10.0, 10.0),
        take_lift,
        *(sources == s for s in range(len(SOURCE_NAMES))),
    ]
    # Each column written into its slot (numpy broadcasts and casts): no per-column copy to stack.
    X = np.empty((*rows.shape, len(cols)), np.float32)
    for i, c in enumerate(cols):
        X[..., i] = c
    X[~valid] = 0.0
    return X
