"""Snapshots of the shared models: bytes with their version and input offsets, cut into checksummed
chunks for a compacted topic, and put back together by a reader that never takes half of one.

A snapshot's chunks are keyed ``<version>/<index>``; once version ``v`` is complete on the topic the
learner tombstones the chunks of the version before it, so compaction keeps the topic at about one
snapshot while a reader starting at any moment still finds a whole one.

>>> snap = Snapshot(3, 1.5, {0: 10}, {1: 7}, 42, {"w": np.arange(3.0)})
>>> chunks = to_chunks(encode(snap), 3, max_bytes=200)
>>> len(chunks) > 1
True
>>> reader = Assembler()
>>> for key, value in chunks[::-1]:  # any order: the version is whole only with every chunk
...     reader.add(key, value)
>>> got = decode(reader.latest()[1])
>>> got.version, got.offsets, got.events, got.records, got.arrays["w"].tolist()
(3, {0: 10}, {1: 7}, 42, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: Below the broker's default message size (1 MiB) with room for the record's own overhead.
MAX_CHUNK_BYTES = 900_000


@dataclass(frozen=True)
class Snapshot:
    """The shared models' arrays as of ``version``, with where the learner stood when it took them."""

    version: int
    created_at: float  # wall clock, seconds
    #: Per learning-topic partition: the next offset to fold (what a restarted learner seeks to).
    offsets: dict[int, int]
    #: Per events partition: the offset after the newest event whose lessons are folded in.
    events: dict[int, int]
    #: Lessons records folded in since the learner started from nothing.
    records: int
    arrays: dict[str, npt.NDArray[np.generic]] = field(repr=False)
    #: Bytes encoded (set when decoded).
    size: int = 0

    @property
    def chunks(self) -> int:
        """How many chunks of :data:`MAX_CHUNK_BYTES` it took on the topic."""
        return max(1, -(-self.size // MAX_CHUNK_BYTES))


def encode(snap: Snapshot) -> bytes:
    """``.npz`` bytes: the arrays, and the rest as JSON in a ``meta`` array (nothing is pickled)."""
    meta = {"version": snap.version, "created_at": snap.created_at, "offsets": snap.offsets,
            "events": snap.events, "records": snap.records}
    out = io.BytesIO()
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), **snap.arrays}
    np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub takes **kwds as allow_pickle
    return out.getvalue()


def decode(raw: bytes) -> Snapshot:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return Snapshot(
        int(meta["version"]), float(meta["created_at"]), {int(k): int(v) for k, v in meta["offsets"].items()},
        {int(k): int(v) for k, v in meta["events"].items()}, int(meta["records"]), arrays, len(raw),
    )


def digest(arrays: dict[str, npt.NDArray[np.generic]]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes and bytes): equal digests, byte-equal models."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def chunk_key(version: int, index: int) -> bytes:
    return f"{version:012d}/{index:06d}".encode()


def to_chunks(payload: bytes, version: int, max_bytes: int = MAX_CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` records of ``payload``: each value a JSON header line (version, index, count,
    the whole payload's size and SHA-256), then its slice of the payload."""
    digest = hashlib.sha256(payload).hexdigest()
    count = max(1, -(-len(payload) // max_bytes))
    out = []
    for index in range(count):
        head = {"version": version, "index": index, "count": count, "size": len(payload), "sha256": digest}
        piece = payload[index * max_bytes : (index + 1) * max_bytes]
        out.append((chunk_key(version, index), json.dumps(head).encode() + b"\n" + piece))
    return out


def chunk_keys(version: int, count: int) -> list[bytes]:
    return [chunk_key(version, i) for i in range(count)]


class Assembler:
    """Collects chunks in any order; :meth:`latest` is the newest version whose every chunk is there and
    whose bytes match their checksum. Holds at most the newest whole snapshot and the chunks of newer ones."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[int, memoryview]] = {}
        self._whole: tuple[int, bytes] | None = None
        #: Chunks refused (unreadable header, or a whole version whose checksum did not match).
        self.refused = 0
        self._live: dict[bytes, int] = {}  # every chunk key on the topic not tombstoned -> its version

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the models topic (a tombstone, ``value is None``, drops its chunk)."""
        if value is None:
            self._live.pop(key or b"", None)
            named, _, at = (key or b"").decode(errors="replace").partition("/")
            if named.isdigit() and at.isdigit():
                self._parts.get(int(named), {}).pop(int(at), None)
            return
        cut = value.find(b"\n")
        cut = len(value) if cut < 0 else cut  # no line: all head, no piece
        try:
            head = json.loads(value[:cut])
            version, index, count = int(head["version"]), int(head["index"]), int(head["count"])
        except (ValueError, KeyError, TypeError):
            self.refused += 1
            return
        self._live[key or b""] = version
        if self._whole is not None and version <= self._whole[0]:
            return  # older than what we hold whole
        parts = self._parts.setdefault(version, {})
        parts[index] = memoryview(value)[cut + 1 :]  # no copy: the payload is copied once, when whole
        if len(parts) == count:
            payload = b"".join(parts[i] for i in range(count))
            del self._parts[version]
            if hashlib.sha256(payload).hexdigest() != head["sha256"] or len(payload) != head["size"]:
                self.refused += count
                return
            self._whole = (version, payload)
            for older in [v for v in self._parts if v < version]:
                del self._parts[older]

    def latest(self) -> tuple[int, bytes] | None:
        """``(version, payload)`` of the newest whole snapshot, if any."""
        return self._whole

    def older_keys(self, version: int) -> list[bytes]:
        """The keys still on the topic of chunks of versions before ``version`` (left by a learner that
        died between publishing a snapshot and tombstoning the one before): to tombstone."""
        return [key for key, v in self._live.items() if v < version]
