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
    for name in ReplayBuffer._FIELDS:
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
    for name in ReplayBuffer._FIELDS:
        np.testing.assert_array_equal(getattr(buf, name), getattr(other, name))
    assert (other.pos, other.size) == (buf.pos, buf.size)
    with pytest.raises(ValueError, match="capacity 8 != configured 9"):
        ReplayBuffer(3, 2, capacity=9).load(tmp_path / "r.npz")
    with pytest.raises(ValueError, match="field obs has shape"):
        ReplayBuffer(4, 2, capacity=8).load(tmp_path / "r.npz")


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, capacity=4).sample(np.random.default_rng(0), 2)
