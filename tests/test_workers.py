"""``data.workers``: the representation job's collection split by env over worker processes, the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from agent.data.buffer import ReplayBuffer
from agent.data.collection import TRAJ_KEY, RepeatedRandomPolicy, make_collector
from agent.data.workers import LocalCollection, WorkerCollection, shards
from agent.run.checkpoint import load_checkpoint
from agent.run.representation import Trainer
from envs.counting import CountingEnv

TASK = {"suite": "counting", "name": "counting4", "reward_type": "dense"}


def stored(source, collects: int) -> ReplayBuffer:
    buffer = ReplayBuffer(10_000, 2, 16, TRAJ_KEY, obs_keys=("obs_reward", "count"))
    try:
        for _ in range(collects):
            for part in next(source):
                buffer.extend(part)
    finally:
        source.shutdown()
    return buffer


@pytest.mark.parametrize("carry", [False, True], ids=["hold", "carry"])
def test_workers_store_the_single_collectors_data(carry):
    """3 workers over 8 envs (2 / 3 / 3), 5 collects (each of the two shared slots reused): every stored key
    equal to the single collector's, and the same trajectories (the buffer's bookkeeping), bit for bit."""
    env = CountingEnv(target=4, batch_size=(8,), reward_type="dense", seed=5)
    space = env.action_spec.space
    policy = RepeatedRandomPolicy(space.low, space.high, 3, seed=5, carry=carry)
    one = stored(LocalCollection(make_collector(env, policy, 8 * 6)), 5)
    split = shards(TASK, 5, 8, 3, 8 * 6, 3, carry)
    assert [(s.first, s.num_envs, s.steps_per_batch) for s in split] == [(0, 2, 6), (2, 3, 6), (5, 3, 6)]
    many = stored(WorkerCollection(split), 5)
    assert len(one) == len(many) == 5 * 48
    a, b = one.stored(), many.stored()
    keys = [k for k in a.keys(include_nested=True, leaves_only=True) if k != TRAJ_KEY]
    assert len(keys) == 7  # action, pixels, obs_reward, count and the next step's three
    for key in keys:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(one._seg_start, many._seg_start) and torch.equal(one._seg_len, many._seg_len)
    assert len(one._seg_len) > 20  # many episodes ended and began inside the collects
    torch.manual_seed(0)
    x = one.sample()
    torch.manual_seed(0)
    y = many.sample()
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_shards_split_whole_envs():
    assert [s.num_envs for s in shards(TASK, 0, 64, 5, 1024, 4, False)] == [12, 13, 13, 13, 13]
    for bad in (0, 9):
        with pytest.raises(ValueError, match="between 1 and data.num_envs=8"):
            shards(TASK, 0, 8, bad, 64, 4, False)


def test_sharded_policy_acts_as_its_rows_of_the_whole_batch():
    low, high = -torch.ones(1), torch.ones(1)
    whole = RepeatedRandomPolicy(low, high, 2, seed=3)
    part = RepeatedRandomPolicy(low, high, 2, seed=3, shard=(2, 5))
    steps = torch.tensor([[0], [1], [2], [3], [0]])
    for t in range(4):
        full = whole(TensorDict({"step_count": steps + t}, batch_size=[5]))["action"]
        rows = part(TensorDict({"step_count": steps[2:4] + t}, batch_size=[2]))["action"]
        assert torch.equal(full[2:4], rows)
    with pytest.raises(ValueError, match="shard must be"):
        RepeatedRandomPolicy(low, high, 2, shard=(5, 5))


def test_a_worker_that_dies_is_an_error_not_a_hang():
    source = WorkerCollection(shards(TASK, 0, 4, 2, 16, 4, False))
    try:
        next(source)
        source._procs[1].kill()
        source._procs[1].join()
        with pytest.raises(RuntimeError, match="collection worker 1 exited"):
            next(source)
    finally:
        source.shutdown()


def test_a_worker_error_comes_back_with_its_traceback():
    source = WorkerCollection(shards({**TASK, "max_steps": 0}, 0, 4, 2, 16, 4, False))
    try:
        with pytest.raises(RuntimeError, match=r"(?s)collection worker 0 failed:.*max_steps must be >= 1"):
            next(source)
    finally:
        source.shutdown()


def test_a_run_with_workers_ends_where_one_without_does(tiny_cfg, tmp_path):
    """The same metrics, row by row; a run begun without workers resumes with them and still ends there."""
    Trainer(tiny_cfg("analysis.every=0"), tmp_path / "local").run()
    Trainer(tiny_cfg("analysis.every=0", "data.workers=3"), tmp_path / "workers").run()
    Trainer(tiny_cfg("analysis.every=0", "steps=6"), tmp_path / "resumed").run()
    Trainer(tiny_cfg("analysis.every=0", "data.workers=2"), tmp_path / "resumed").run()

    def rows(run: str) -> np.ndarray:
        text = (tmp_path / run / "metrics.csv").read_text()
        header = text.split("\n")[0].split(",")
        keep = [i for i, k in enumerate(header) if k != "perf/updates_per_s"]
        return np.genfromtxt(tmp_path / run / "metrics.csv", delimiter=",", skip_header=1)[:, keep]

    assert rows("local").shape[0] == 4
    np.testing.assert_array_equal(rows("local"), rows("workers"))
    np.testing.assert_array_equal(rows("local"), rows("resumed"))
    weights = [load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["agent"] for r in ("local", "workers")]
    tensors = [k for k, v in weights[0].items() if isinstance(v, torch.Tensor)]
    assert len(tensors) > 10 and all(torch.equal(weights[0][k], weights[1][k]) for k in tensors)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.workers=9"], "data.workers=9: at most data.num_envs=8"),
        (["data.workers=-1"], "data.workers"),
        (["task=dmc/reacher-easy", "data.workers=2"], "task suite 'dmc' collects in this process"),
    ],
)
def test_bad_workers_fail_before_work(tiny_cfg, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_cfg(*overrides), tmp_path)
