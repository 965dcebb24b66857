"""The robot's spool: numbering across restarts, bounded size, deletion only of what the learner made durable."""

import os

import pytest

from firmware_bridge.learner_spool import Spool, SpoolError, pack_frames


def frames(first):
    return [f"header {first}".encode(), bytes(100)]


def test_batches_are_numbered_read_back_and_survive_a_restart(tmp_path):
    spool = Spool(tmp_path, fsync=False)
    assert (spool.next_seq, spool.lowest_held, spool.held) == (0, 0, 0)
    assert spool.add(10, frames)[0] == 0
    assert spool.add(5, frames)[0] == 10
    assert spool.read(10) == frames(10)
    assert spool.batch_from(3) == (0, 10) and spool.batch_from(12) == (10, 5) and spool.batch_from(15) is None
    (tmp_path / "0000000000000099-000001.batch.tmp").write_bytes(b"half")  # a write cut by a crash

    again = Spool(tmp_path, fsync=False)
    assert again.spool_id == spool.spool_id
    assert (again.next_seq, again.lowest_held, again.held) == (15, 0, 15)
    assert not list(tmp_path.glob("*.tmp"))
    assert again.add(1, frames)[0] == 15


def test_forget_deletes_only_whole_batches_covered_and_numbering_continues(tmp_path):
    spool = Spool(tmp_path, fsync=False)
    for _ in range(3):
        spool.add(4, frames)
    assert spool.forget_through(5) == 4  # batch 4-7 is not wholly covered
    assert spool.lowest_held == 4
    assert spool.forget_through(11) == 8
    assert (spool.held, spool.lowest_held) == (0, 12)
    assert Spool(tmp_path, fsync=False).next_seq == 12  # empty, yet the numbers do not restart


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path):
    one = len(b"".join(frames(0))) + 24
    spool = Spool(tmp_path, max_bytes=3 * one, fsync=False)
    for _ in range(5):
        spool.add(2, frames)
    assert spool.dropped == 4
    assert (spool.lowest_held, spool.held) == (4, 6)
    assert spool.held_bytes <= 3 * one


def test_a_damaged_batch_file_is_named(tmp_path):
    spool = Spool(tmp_path, fsync=False)
    spool.add(1, frames)
    path = next(tmp_path.glob("*.batch"))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SpoolError, match=path.name):
        spool.read(0)



def test_with_fsync_each_batch_and_its_rename_reach_the_disk(tmp_path, monkeypatch):
    synced, fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    spool = Spool(tmp_path, fsync=True)
    synced.clear()
    spool.add(2, frames)
    batch = str(tmp_path / "0000000000000000-000002.batch")
    # Each file's bytes under its temporary name, then the directory that holds its rename.
    assert synced[:2] == [batch + ".tmp", str(tmp_path)] and synced[-1] == str(tmp_path)


def test_batches_set_aside_leave_the_numbering_and_stay_bounded_on_disk(tmp_path):
    one = len(pack_frames(frames(0)))  # one batch's bytes
    spool = Spool(tmp_path, max_bytes=3 * one + one // 2, fsync=False)
    for _ in range(3):
        spool.add(5, frames)
    assert [spool.set_aside(first, "interface-aaaa") for first in (0, 5)] == [5, 5]
    assert (spool.batches(), spool.lowest_held, spool.held) == ([10], 10, 5)
    spool.add(5, frames)
    spool.add(5, frames)
    # What is set aside is bounded apart from what is held: a fourth batch set aside pushes the oldest out.
    spool.set_aside(10, "interface-aaaa")
    spool.set_aside(15, "interface-bbbb")
    assert (spool.batches(), spool.dropped) == ([20], 5)
    left = sorted(p.name for d in tmp_path.iterdir() if d.is_dir() for p in d.iterdir())
    assert [name[:16] for name in left] == ["0000000000000005", "0000000000000010", "0000000000000015"]
    assert Spool(tmp_path, fsync=False).batches() == [20]  # a restart does not take them back
