"""``data.workers``: the representation job's collection split by env over worker processes, the same data."""

from __future__ import annotations

import subprocess
import sys
import time

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
from tests.conftest import ROOT, metrics_rows

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


@pytest.mark.parametrize(("carry", "frames", "steps"), [(False, 48, 6), (True, 50, 6), (False, 5, 1)], ids=["hold", "carry-uneven", "fewer-than-envs"])
def test_workers_store_the_single_collectors_data(carry, frames, steps):
    """3 workers over 8 envs (2 / 3 / 3), 5 collects (each of the two shared slots reused): every stored key
    equal to the single collector's (torchrl's), and the same trajectories (the buffer's bookkeeping), bit for bit."""
    env = CountingEnv(target=4, batch_size=(8,), reward_type="dense", seed=5)
    space = env.action_spec.space
    policy = RepeatedRandomPolicy(space.low, space.high, 3, seed=5, carry=carry)
    one = stored(LocalCollection(make_collector(env, policy, frames, direct=False)), 5)
    split = shards(TASK, seed=5, total=8, workers=3, frames_per_batch=frames, action_hold=3, carry=carry)
    assert [(s.first, s.num_envs, s.steps_per_batch) for s in split] == [(0, 2, steps), (2, 3, steps), (5, 3, steps)]
    many = stored(WorkerCollection(split), 5)
    assert len(one) == len(many) == 5 * 8 * steps
    a, b = one.stored(), many.stored()
    keys = [k for k in a.keys(include_nested=True, leaves_only=True) if k != TRAJ_KEY]
    assert len(keys) == 7  # action, pixels, obs_reward, count and the next step's three
    for key in keys:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(one.segments.start, many.segments.start) and torch.equal(one.segments.length, many.segments.length)
    assert len(one.segments.length) > 10  # many episodes ended and began inside the collects
    if steps > 1:  # (one-step collects store each env's steps apart: no slice of 2 steps)
        torch.manual_seed(0)
        x = one.sample()
        torch.manual_seed(0)
        y = many.sample()
        assert all(torch.equal(x[k], y[k]) for k in x)


def split(total: int, workers: int, frames: int, task: dict = TASK) -> list:
    return shards(task, seed=0, total=total, workers=workers, frames_per_batch=frames, action_hold=4, carry=False)


def test_shards_split_whole_envs():
    assert [s.num_envs for s in split(64, 5, 1024)] == [12, 13, 13, 13, 13]
    for bad in (0, 9):
        with pytest.raises(ValueError, match="between 1 and data.num_envs=8"):
            split(8, bad, 64)


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
    source = WorkerCollection(split(4, 2, 16))
    try:
        next(source)
        source._procs[1].kill()
        source._procs[1].join()
        with pytest.raises(RuntimeError, match="collection worker 1 exited"):
            next(source)
    finally:
        source.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):  # not a fresh start of the streams
        next(source)


def test_a_worker_error_comes_back_with_its_traceback():
    source = WorkerCollection(split(4, 2, 16, {**TASK, "max_steps": 0}))
    try:
        with pytest.raises(RuntimeError, match=r"(?s)collection worker 0 failed:.*max_steps must be >= 1"):
            next(source)
    finally:
        source.shutdown()


ORPHANS = """
import os, sys
from agent.data.workers import WorkerCollection, shards
source = WorkerCollection(shards({"suite": "counting"}, seed=0, total=4, workers=2, frames_per_batch=16, action_hold=4, carry=False))
next(source)
print(*[p.pid for p in source._procs], flush=True)
os._exit(0)  # as a killed run: no shutdown
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_end_when_the_main_process_dies_without_stopping_them():
    out = subprocess.run([sys.executable, "-c", ORPHANS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by init, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_run_with_workers_ends_where_one_without_does(tiny_cfg, tmp_path):
    """The same metrics, row by row; a run begun without workers resumes with them and still ends there."""
    Trainer(tiny_cfg("analysis.every=0"), tmp_path / "local").run()
    Trainer(tiny_cfg("analysis.every=0", "data.workers=3"), tmp_path / "workers").run()
    Trainer(tiny_cfg("analysis.every=0", "steps=6"), tmp_path / "resumed").run()
    Trainer(tiny_cfg("analysis.every=0", "data.workers=2"), tmp_path / "resumed").run()
    local = metrics_rows(tmp_path / "local")
    assert local.shape[0] == 4
    np.testing.assert_array_equal(local, metrics_rows(tmp_path / "workers"))
    np.testing.assert_array_equal(local, metrics_rows(tmp_path / "resumed"))
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
