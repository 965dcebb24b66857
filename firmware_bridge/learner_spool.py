"""The robot's on-disk spool of transition batches the learner has not yet made durable.

One file per batch, ``<first_seq>-<count>.batch``, holding the encoded message frames; ``meta.json`` holds
the spool's random id and the next sequence number, so numbering continues across restarts of the robot
program. Files are written to a temporary name and renamed, so a crash leaves whole batches or none. The
spool is bounded in bytes: when a new batch would not fit, the oldest are deleted and counted as dropped
(the robot keeps running; the learner learns of the hole from ``lowest_held``).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from firmware_bridge.durable_files import durable_flush, sync_directory

_MAGIC = b"RSSPOOL1"
_BATCH = re.compile(r"^(\d{16})-(\d{6})\.batch$")


class SpoolError(RuntimeError):
    """A spool file that cannot be read back (named, with the byte where it went wrong)."""


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            durable_flush(f)
    tmp.replace(path)
    if fsync:  # the rename itself is an entry in the directory: without this a power loss can undo it
        sync_directory(path.parent)


def pack_frames(frames: list[bytes | memoryview]) -> bytes:
    parts = [_MAGIC, struct.pack("<I", len(frames))]
    for frame in frames:
        parts += [struct.pack("<I", len(frame)), bytes(frame)]
    return b"".join(parts)


def unpack_frames(data: bytes, source: str) -> list[bytes]:
    if data[: len(_MAGIC)] != _MAGIC:
        raise SpoolError(f"{source}: not a spool batch (starts with {data[:8].hex(' ')})")
    pos = len(_MAGIC)
    try:
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        frames = []
        for _ in range(n):
            (size,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if pos + size > len(data):
                raise SpoolError(f"{source}: frame at byte {pos} needs {size} bytes, file ends at {len(data)}")
            frames.append(data[pos : pos + size])
            pos += size
    except struct.error:
        raise SpoolError(f"{source}: truncated at byte {pos}") from None
    return frames


class Spool:
    def __init__(self, directory: str | os.PathLike, max_bytes: int = 256 * 1024 * 1024, fsync: bool = True):
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes: must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.fsync = fsync
        self.dropped = 0
        """Transitions deleted unsent or unacknowledged because the spool was full, or set aside beyond
        ``max_bytes``."""
        meta_path = self.directory / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            self.spool_id, self.next_seq = str(meta["spool_id"]), int(meta["next_seq"])
        else:
            self.spool_id, self.next_seq = secrets.token_hex(8), 0
        self._index: OrderedDict[int, tuple[int, int]] = OrderedDict()  # first -> (count, bytes)
        found = []
        for path in self.directory.iterdir():
            m = _BATCH.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), path.stat().st_size))
            elif path.name.endswith(".tmp"):
                path.unlink()  # a write the last run did not finish
        for first, count, size in sorted(found):
            self._index[first] = (count, size)
            self.next_seq = max(self.next_seq, first + count)
        self._firsts = list(self._index)  # sorted, for bisect in batch_from
        self.held_bytes = sum(size for _, size in self._index.values())
        # Kept as plain numbers (not summed over the index) so other threads may read them at any time.
        self.held = sum(count for count, _ in self._index.values())
        """Transitions in the spool."""
        self._write_meta()

    def _path(self, first: int, count: int) -> Path:
        return self.directory / f"{first:016d}-{count:06d}.batch"

    def _write_meta(self) -> None:
        meta = {"spool_id": self.spool_id, "next_seq": self.next_seq}
        _write_atomic(self.directory / "meta.json", json.dumps(meta).encode(), self.fsync)

    @property
    def lowest_held(self) -> int:
        """The oldest sequence number still held (``next_seq`` when empty)."""
        try:
            return self._firsts[0]
        except IndexError:
            return self.next_seq

    def add(self, count: int, encode: Callable[[int], list[bytes | memoryview]]) -> tuple[int, list[bytes]]:
        """Number ``count`` new transitions, store ``encode(first_seq)``; returns the first number and the
        frames. The oldest batches make room when the spool is full."""
        if count <= 0:
            raise ValueError(f"spool: a batch needs at least one transition, got {count}")
        first = self.next_seq
        frames = [bytes(f) for f in encode(first)]
        data = pack_frames(frames)
        while self._index and self.held_bytes + len(data) > self.max_bytes:
            old_first, (old_count, _) = next(iter(self._index.items()))
            self.dropped += old_count
            self._delete(old_first)
        _write_atomic(self._path(first, count), data, self.fsync)
        self._index[first] = (count, len(data))
        self._firsts.append(first)
        self.held_bytes += len(data)
        self.held += count
        self.next_seq = first + count
        self._write_meta()
        return first, frames

    def _delete(self, first: int) -> None:
        count, size = self._index.pop(first)
        del self._firsts[bisect.bisect_left(self._firsts, first)]
        self.held_bytes -= size
        self.held -= count
        self._path(first, count).unlink(missing_ok=True)

    def batches(self) -> list[int]:
        """The first numbers of the batches held, oldest first."""
        return list(self._firsts)

    def set_aside(self, first: int, folder: str) -> int:
        """Move the batch starting at ``first`` into ``folder`` under the spool, out of the numbering's way: it
        is no longer held (``lowest_held`` moves past it, so the learner counts it lost instead of waiting for
        it) but stays on disk for whoever wants it. Returns its transition count."""
        count, _ = self._index[first]
        path = self._path(first, count)
        (self.directory / folder).mkdir(exist_ok=True)
        path.replace(self.directory / folder / path.name)
        if self.fsync:
            sync_directory(self.directory / folder)
            sync_directory(self.directory)
        self._delete(first)  # its unlink finds the file gone
        self._bound_set_aside()
        return count

    def _bound_set_aside(self) -> None:
        """What is set aside is bounded by ``max_bytes`` too, apart from what is held: the oldest goes first, and
        is counted dropped."""
        kept = sorted(
            (p.stat().st_mtime, p) for folder in self.directory.iterdir() if folder.is_dir()
            for p in folder.iterdir() if _BATCH.match(p.name)
        )  # fmt: skip
        total = sum(p.stat().st_size for _, p in kept)
        for _, p in kept:
            if total <= self.max_bytes:
                break
            total -= p.stat().st_size
            self.dropped += int(_BATCH.match(p.name).group(2))
            p.unlink()

    def forget_through(self, seq: int) -> int:
        """Delete every batch whose last number is at most ``seq`` (the learner made them durable); returns
        the number of transitions deleted."""
        gone = []
        for first, (count, _) in self._index.items():
            if first + count - 1 > seq:
                break
            gone.append((first, count))
        for first, _ in gone:
            self._delete(first)
        return sum(count for _, count in gone)

    def batch_from(self, seq: int) -> tuple[int, int] | None:
        """``(first, count)`` of the batch holding ``seq``, else the oldest batch after it, else None."""
        i = max(bisect.bisect_right(self._firsts, seq) - 1, 0)
        for first in self._firsts[i : i + 2]:
            count = self._index[first][0]
            if first + count - 1 >= seq:
                return first, count
        return None

    def read(self, first: int) -> list[bytes]:
        count, _ = self._index[first]
        path = self._path(first, count)
        return unpack_frames(path.read_bytes(), str(path))
