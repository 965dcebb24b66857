import re

import numpy as np
import pytest

from robot_sac.replay import ReplayBuffer


def _fill(buf, n, start=0):
    for i in range(start, start + n):
        buf.add(np.full(3, i), np.full(2, -i), float(i), np.full(3, i + 1), i % 5 == 0)


def test_ring_buffer_overwrites_the_oldest_and_keeps_size():
    buf = ReplayBuffer(3, 2, capacity=8)
    _fill(buf, 11)
    assert len(buf) == 8 and buf.pos == 3
    assert sorted(buf.reward.tolist()) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert buf.obs[0, 0] == 8 and buf.next_obs[0, 0] == 9 and buf.action[0, 0] == -8


def test_add_batch_equals_repeated_add_across_the_wrap():
    a, b = ReplayBuffer(3, 2, capacity=8), ReplayBuffer(3, 2, capacity=8)
    _fill(a, 6)
    _fill(a, 5, start=6)
    _fill(b, 6)
    idx = np.arange(6, 11)
    b.add_batch(np.repeat(idx[:, None], 3, 1), -np.repeat(idx[:, None], 2, 1), idx.astype(float),
                np.repeat(idx[:, None] + 1, 3, 1), idx % 5 == 0)
    for name in a.fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.pos, a.size) == (b.pos, b.size)


def test_sample_is_consistent_rows_and_seeded():
    buf = ReplayBuffer(3, 2, capacity=100)
    _fill(buf, 40)
    batch = buf.sample(np.random.default_rng(0), 64)
    assert batch.obs.shape == (64, 3) and batch.reward.shape == (64,)
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), batch.reward.numpy())
    np.testing.assert_array_equal(batch.next_obs[:, 0].numpy(), batch.reward.numpy() + 1)
    np.testing.assert_array_equal(batch.terminated.numpy(), (batch.reward.numpy() % 5 == 0).astype(np.float32))
    again = buf.sample(np.random.default_rng(0), 64)
    np.testing.assert_array_equal(batch.obs.numpy(), again.obs.numpy())
    assert batch.reward.max() < 40


def test_save_and_load_round_trip(tmp_path):
    buf = ReplayBuffer(3, 2, capacity=8)
    _fill(buf, 11)
    buf.save(tmp_path / "r.npz")
    other = ReplayBuffer(3, 2, capacity=8)
    other.load(tmp_path / "r.npz")
    for name in buf.fields:
        np.testing.assert_array_equal(getattr(buf, name), getattr(other, name))
    assert (other.pos, other.size) == (buf.pos, buf.size)
    with pytest.raises(ValueError, match="capacity 8 != configured 9"):
        ReplayBuffer(3, 2, capacity=9).load(tmp_path / "r.npz")
    with pytest.raises(ValueError, match="field obs has shape"):
        ReplayBuffer(4, 2, capacity=8).load(tmp_path / "r.npz")


def test_a_file_whose_counters_or_rows_do_not_fit_is_refused_naming_it(tmp_path):
    buf = ReplayBuffer(3, 2, capacity=8)
    _fill(buf, 5)
    buf.save(tmp_path / "r.npz")
    good = dict(np.load(tmp_path / "r.npz"))
    cases = {
        "size 9 is outside [0, 8]": {"size": 9},
        "write position 2 does not fit size 5 of 8": {"pos": 2},
        "write position 8 does not fit": {"pos": 8, "size": 8},
        "field obs has 4 rows, the file's size is 5": {"obs": good["obs"][:4]},
    }
    for message, change in cases.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **{**good, **change})
        other = ReplayBuffer(3, 2, capacity=8)
        with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
            other.load(path)
        assert other.size == 0 and not other.obs.any()  # nothing written


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, capacity=4).sample(np.random.default_rng(0), 2)


def _fill_privileged(buf, n):
    for i in range(n):
        buf.add(np.full(3, i), np.full(2, -i), float(i), np.full(3, i + 1), False,
                privileged=np.full(4, 10 * i), next_privileged=np.full(4, 10 * i + 10))


def test_privileged_rows_travel_with_their_transition_through_sample_and_save(tmp_path):
    buf = ReplayBuffer(3, 2, capacity=8, privileged_dim=4)
    _fill_privileged(buf, 11)
    batch = buf.sample(np.random.default_rng(0), 32)
    assert batch.privileged.shape == (32, 4)
    np.testing.assert_array_equal(batch.privileged[:, 3].numpy(), 10 * batch.reward.numpy())
    np.testing.assert_array_equal(batch.next_privileged[:, 0].numpy(), 10 * batch.reward.numpy() + 10)
    buf.save(tmp_path / "r.npz")
    other = ReplayBuffer(3, 2, capacity=8, privileged_dim=4)
    other.load(tmp_path / "r.npz")
    for name in ("privileged", "next_privileged", "obs"):
        np.testing.assert_array_equal(getattr(buf, name), getattr(other, name))
    plain = ReplayBuffer(3, 2, capacity=8)
    _fill(plain, 2)
    assert plain.sample(np.random.default_rng(0), 1).privileged is None


def test_privileged_fields_are_required_exactly_where_the_buffer_stores_them_and_refusals_write_nothing(tmp_path):
    with_room = ReplayBuffer(3, 2, capacity=8, privileged_dim=4)
    _fill_privileged(with_room, 8)
    before = {name: getattr(with_room, name).copy() for name in with_room.fields}
    with pytest.raises(ValueError, match="next_privileged: this buffer stores it, and it is missing"):
        with_room.add(np.ones(3), np.ones(2), 1.0, np.ones(3), False, privileged=np.ones(4))
    with pytest.raises(ValueError, match=r"privileged: shape \(2, 5\), expected \(2, 4\)"):
        with_room.add_batch(np.ones((2, 3)), np.ones((2, 2)), np.ones(2), np.ones((2, 3)), np.zeros(2),
                            privileged=np.ones((2, 5)), next_privileged=np.ones((2, 4)))
    plain = ReplayBuffer(3, 2, capacity=8)
    with pytest.raises(ValueError, match="next_privileged: this buffer has no room for it"):
        plain.add(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False, next_privileged=np.zeros(4))
    _fill(plain, 3)
    plain.save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="no field privileged \\(saved by a run without sac.privileged_critic\\)"):
        with_room.load(tmp_path / "plain.npz")
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(with_room, name), value, err_msg=name)
    assert (with_room.pos, with_room.size) == (0, 8)
    with_room.save(tmp_path / "privileged.npz")
    with pytest.raises(ValueError, match="field privileged is stored, and this buffer has no room for it"):
        plain.load(tmp_path / "privileged.npz")
