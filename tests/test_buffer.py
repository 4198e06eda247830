"""The replay buffer's slice sampling: trajectories drawn uniformly, then a start inside each; the ring."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from agent.data.buffer import ReplayBuffer


def steps(start: int, n: int, episode: int) -> TensorDict:
    """``n`` transitions numbered ``start..`` (``observation``), ``next`` numbered one on."""
    t = torch.arange(start, start + n).float()[:, None]
    ep = torch.full((n,), episode)
    return TensorDict({"observation": t, "action": t, "episode": ep, "next": {"observation": t + 1, "reward": t, "episode": ep}}, [n])


def buffer_of(lengths: list[int], capacity: int = 1000, horizon: int = 3, batch: int = 4, one_at_a_time: bool = False) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, horizon, batch, "episode", step_keys=("reward", "episode"))
    start = 0
    for episode, n in enumerate(lengths):
        parts = [steps(start + i, 1, episode) for i in range(n)] if one_at_a_time else [steps(start, n, episode)]
        for part in parts:
            buf.extend(part)
        start += n
    return buf


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_trajectories_are_drawn_uniformly_then_a_start_inside(one_at_a_time):
    """Episodes of 2, 5 and 10 steps, horizon 3: the 2-step one never, the others half the time each
    (whatever their length, as TD-MPC2's sampler), each start equally often; an online run stores one
    step at a time and keeps its episodes whole."""
    buf = buffer_of([2, 5, 10], batch=20_000, one_at_a_time=one_at_a_time)
    torch.manual_seed(0)
    first = buf.slices()[0]  # [B] slots of the slices' first steps (not wrapped: slot = step number)
    assert ((first >= 2) & (first <= 4)).logical_or((first >= 7) & (first <= 14)).all()
    starts = torch.bincount(first, minlength=17).float() / len(first)
    assert abs(starts[2:5].sum() - 0.5) < 0.02
    torch.testing.assert_close(starts[2:5], torch.full((3,), 0.5 / 3), atol=0.01, rtol=0)
    torch.testing.assert_close(starts[7:15], torch.full((8,), 0.5 / 8), atol=0.01, rtol=0)
    batch = buf.sample()
    assert batch["obs"].shape == (4, 20_000, 1) and batch["action"].shape == (3, 20_000, 1)
    assert (batch["obs"][1:] - batch["obs"][:-1] == 1).all() and (batch["episode"] == batch["episode"][0]).all()


def test_the_ring_drops_what_it_overwrote():
    buf = buffer_of([6, 9], capacity=10, horizon=2, batch=2000)  # 15 writes: steps 5..14 remain
    assert len(buf) == 10 and [int(x) for x in buf.stored()["observation"]] == list(range(5, 15))
    torch.manual_seed(0)
    batch = buf.sample()
    assert (batch["episode"] == 1).all()  # episode 0 kept one step: shorter than the horizon
    assert batch["obs"].min() == 6 and batch["obs"].max() == 15  # every slice of episode 1 (slots wrap)
    assert (batch["obs"][1:] - batch["obs"][:-1] == 1).all()
    buf.extend(steps(15, 25, 2))  # more than the capacity at once: the newest 10
    assert [int(x) for x in buf.stored()["observation"]] == list(range(30, 40))
    assert (buf.sample()["episode"] == 2).all()


def test_a_trajectory_needs_the_horizon_and_keys_stay_apart():
    buf = buffer_of([2, 2], horizon=3)
    with pytest.raises(RuntimeError, match="no trajectory of at least horizon=3"):
        buf.slices()
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(10, 2, 4, "episode").sample()
    with pytest.raises(ValueError, match="capacity, horizon and batch_size must be >= 1"):
        ReplayBuffer(0, 2, 4, "episode")
    buf = buffer_of([3, 3], horizon=2, batch=500)  # same length: the boundary between 0 and 1 never crossed
    assert (buf.sample()["episode"].diff(dim=0) == 0).all()
