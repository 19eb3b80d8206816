"""What a micro-batch teaches the shared models, by item id, so any process with the catalog can learn it."""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from streams.feedback import Reward
from streams.learning.snapshot import MAX_CHUNK_BYTES

#: A lessons record's head: the events partition it answers and the offset after its last event.
_HEAD = struct.Struct(">iq")
F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


def _ids(values: Sequence[str]) -> npt.NDArray[np.str_]:
    return np.array(values, dtype=np.str_) if len(values) else np.zeros(0, "<U1")


@dataclass(frozen=True)
class Lessons:
    """One batch's lessons; every row names the batch event it came from (``*_event``), so the lessons
    can be split the way the batch's events are (by input partition).

    * engagements (positive events): popularity, co-visitation with the user's ``recent`` items (their
      history before the event) and MF learn them;
    * ranked lists (``rank_*``): the ranker's feature tensor of a user's previous list, its candidates'
      ids (``""`` padding) and the candidate they took next;
    * rewards: the bandit learns which shown items were engaged with (1) or ignored (0).

    >>> shown = Reward("i2", "arm", "relevance", "trending", 0, 1.0, "u1", "e0", 0.0)
    >>> lessons = Lessons.build(
    ...     [(0, "u1", "i2", 1.0, ["i1"])], np.zeros((0, 3, 2), np.float32), np.zeros((0, 3), bool), [], [],
    ...     [(0, shown)])
    >>> again = Lessons.from_bytes(lessons.to_bytes())
    >>> again.users.tolist(), again.recent_lists(), again.reward_items.tolist()
    (['u1'], [['i1']], ['i2'])
    >>> len(again.take(np.array([1])).users)
    0
    """

    eng_event: I32
    users: npt.NDArray[np.str_]
    items: npt.NDArray[np.str_]
    weights: npt.NDArray[np.float64]
    recent: npt.NDArray[np.str_]  # every engagement's recent items, concatenated ...
    recent_len: I32  # ... this many each
    rank_event: I32
    rank_x: F32  # [lists, candidates, features]
    rank_valid: npt.NDArray[np.bool_]  # [lists, candidates]
    rank_taken: npt.NDArray[np.int64]  # [lists]
    rank_items: npt.NDArray[np.str_]  # [lists, candidates]
    reward_event: I32
    reward_items: npt.NDArray[np.str_]
    reward_values: npt.NDArray[np.float64]

    @classmethod
    def build(
        cls,
        engagements: Sequence[tuple[int, str, str, float, Sequence[str]]],
        rank_x: F32,
        rank_valid: npt.NDArray[np.bool_],
        rank_taken: Sequence[int],
        rank_event: Sequence[int],
        rewards: Sequence[tuple[int, Reward]],
        rank_items: npt.NDArray[np.str_] | None = None,
    ) -> Lessons:
        """From ``(event, user, item, weight, recent items)`` engagements, ranked lists (``rank_items``: their
        candidates' ids, ``""`` padding; none: all padding) and ``(event, reward)``."""
        recent = [r for *_, mine in engagements for r in mine]
        return cls(
            eng_event=np.array([e[0] for e in engagements], np.int32),
            users=_ids([e[1] for e in engagements]),
            items=_ids([e[2] for e in engagements]),
            weights=np.array([e[3] for e in engagements], np.float64),
            recent=_ids(recent),
            recent_len=np.array([len(e[4]) for e in engagements], np.int32),
            rank_event=np.array(rank_event, np.int32),
            rank_x=rank_x.astype(np.float32),
            rank_valid=rank_valid,
            rank_taken=np.array(rank_taken, np.int64),
            rank_items=np.full(rank_valid.shape, "", "<U1") if rank_items is None else rank_items,
            reward_event=np.array([b for b, _ in rewards], np.int32),
            reward_items=_ids([r.item_id for _, r in rewards]),
            reward_values=np.array([r.reward for _, r in rewards], np.float64),
        )

    def __len__(self) -> int:
        """Lessons of every kind."""
        return len(self.users) + len(self.rank_event) + len(self.reward_items)

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold."""
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def recent_lists(self) -> list[list[str]]:
        """Each engagement's recent items, oldest first."""
        bounds = np.concatenate([[0], np.cumsum(self.recent_len)]).tolist()
        return [self.recent[a:b].tolist() for a, b in itertools.pairwise(bounds)]

    def take(self, events: npt.NDArray[np.int64]) -> Lessons:
        """The lessons of batch events ``events`` only."""
        eng = np.isin(self.eng_event, events)
        keep_recent = np.repeat(eng, self.recent_len) if len(self.recent_len) else np.zeros(0, bool)
        rank, reward = np.isin(self.rank_event, events), np.isin(self.reward_event, events)
        return Lessons(
            self.eng_event[eng], self.users[eng], self.items[eng], self.weights[eng], self.recent[keep_recent],
            self.recent_len[eng], self.rank_event[rank], self.rank_x[rank], self.rank_valid[rank],
            self.rank_taken[rank], self.rank_items[rank], self.reward_event[reward], self.reward_items[reward],
            self.reward_values[reward],
        )

    def to_bytes(self) -> bytes:
        """``.npz`` bytes (numpy arrays only: loading never unpickles)."""
        out = io.BytesIO()
        np.savez(out, **{f.name: getattr(self, f.name) for f in fields(self)})
        return out.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Lessons:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        # A worker of the version before candidate ids sends none: its lists teach no take rates.
        arrays.setdefault("rank_items", np.full(arrays["rank_valid"].shape, "", "<U1"))
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})


def to_record(lessons: Lessons, partition: int, next_offset: int) -> bytes:
    """The learning topic's value for ``lessons`` of events partition ``partition`` up to ``next_offset``.

    >>> partition, offset, back = from_record(to_record(Lessons.build([], np.zeros((0, 0, 1), np.float32),
    ...     np.zeros((0, 0), bool), [], [], []), 3, 120))
    >>> partition, offset, len(back)
    (3, 120, 0)
    """
    return _HEAD.pack(partition, next_offset) + lessons.to_bytes()


def to_records(
    lessons: Lessons, events: Sequence[int], offsets: Sequence[int], partition: int, next_offset: int,
    max_bytes: int = MAX_CHUNK_BYTES,
) -> list[tuple[int, Lessons, bytes]]:
    """``(next offset, lessons, value)`` of the learning topic records for the lessons of batch ``events``
    (all of one events partition, in order, at ``offsets``), which cover it up to ``next_offset``: one
    record, or, where that would pass ``max_bytes`` (a broker takes about 1 MB), the events cut in halves
    until each record fits, each covering up to the offset after its last event. A learner folds them as
    it would the one record; a single event's lessons always go out whole.

    >>> lessons = Lessons.build([(b, "u", "i", 1.0, ["j"] * 400) for b in range(4)], np.zeros((0, 0, 1), np.float32),
    ...                         np.zeros((0, 0), bool), [], [], [])
    >>> [(n, len(mine.users)) for n, mine, _ in to_records(lessons, [0, 1, 2, 3], [10, 11, 12, 13], 0, 20, 8_000)]
    [(12, 2), (20, 2)]
    """
    mine = lessons.take(np.asarray(events, np.int64))
    value = to_record(mine, partition, next_offset)
    if len(value) <= max_bytes or len(events) == 1:
        return [(next_offset, mine, value)]
    half = len(events) // 2
    return [
        *to_records(lessons, events[:half], offsets[:half], partition, offsets[half - 1] + 1, max_bytes),
        *to_records(lessons, events[half:], offsets[half:], partition, next_offset, max_bytes),
    ]


def from_record(raw: bytes) -> tuple[int, int, Lessons]:
    """``(events partition, next offset, lessons)`` of a learning topic value; ``ValueError`` if unreadable."""
    try:
        partition, next_offset = _HEAD.unpack_from(raw)
        return partition, next_offset, Lessons.from_bytes(raw[_HEAD.size :])
    except (struct.error, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable lessons record: {exc!r}") from exc
