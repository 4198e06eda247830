"""The paper's data collection: repeated random actions, collector -> slice buffer -> time-major batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrl.collectors import Collector

from agent.data.buffer import ReplayBuffer
from agent.data.collection import (
    TRAJ_KEY,
    DirectCollector,
    RepeatedRandomPolicy,
    make_collector,
)
from agent.run.representation import Trainer
from envs.counting import CountingEnv, as_state
from tests.conftest import metrics_rows, same_batches


def test_policy_holds_each_action_for_repeat_steps():
    env = CountingEnv(batch_size=(16,), max_steps=100, target=0, seed=0)  # target 0 rarely ends
    policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, repeat=4, seed=0)
    td = env.reset()
    actions, steps = [], []
    for _ in range(12):
        td = policy(td)
        actions.append(td["action"].clone())
        steps.append(td["step_count"].clone())
        td = env.step(td)["next"]
    a, s = torch.stack(actions), torch.stack(steps)  # [T, N, 1]
    alive = s[:, :, 0] == torch.arange(12)[:, None]  # envs never reset in between
    for t in range(1, 12):
        same = torch.isclose(a[t], a[t - 1]).squeeze(-1)
        held = alive[t] & (t % 4 != 0)
        assert same[held].all()
        assert not same[alive[t] & (t % 4 == 0)].any()
    assert a.abs().max() <= 1 and a.std() > 0.3


def test_slices_stay_inside_trajectories():
    env = CountingEnv(batch_size=(8,), seed=1)
    policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, repeat=4, seed=1)
    collector = make_collector(env, policy, frames_per_batch=8 * 7)
    buffer = ReplayBuffer(10_000, horizon=2, batch_size=32, traj_key=TRAJ_KEY, obs_keys=("obs_reward", "count"))
    it = iter(collector)
    for _ in range(6):  # several batches: trajectories continue across collector batches
        assert buffer.extend(next(it)) == 8 * 7
    collector.shutdown()
    assert len(buffer) == 6 * 8 * 7
    data = buffer.stored()  # not wrapped: storage slot = index here
    torch.manual_seed(0)
    batch = buffer.sample()  # the buffer's own batches: time-major on its device
    assert batch["obs"].shape == (3, 32, 3, 64, 64) and batch["count"].shape == (3, 32)
    assert batch["action"].shape == (2, 32, 1) and batch["obs_reward"].shape == (3, 32, 1)
    torch.manual_seed(0)
    s = data[buffer.slices()]  # [H, B]: the transitions of those slices
    assert torch.equal(batch["obs"], torch.cat([s["pixels"][:1], s["next", "pixels"]]))
    assert torch.equal(batch["count"], torch.cat([s["count"][:1], s["next", "count"]]))
    for _ in range(5):
        s = data[buffer.slices()]
        assert (s["collector", "traj_ids"][0] == s["collector", "traj_ids"][1]).all()
        assert torch.equal(s["next", "pixels"][0], s["pixels"][1])  # consecutive steps
        assert torch.equal(s["next", "count"][0], s["count"][1])  # (the buffer stores only the keys batches read)


@pytest.mark.parametrize(("direct", "envs", "frames"), [(False, 8, 48), (True, 8, 48), (True, 1, 1)], ids=["torchrl", "direct", "paper"])
def test_the_jobs_frames_once_buffer_gives_what_storing_both_gives(direct, envs, frames):
    """The representation job's ``obs_once`` buffer on the collectors' own data (pixels, count, reward;
    episodes end inside and across batches; the ring wraps): the same batches and stored transitions as
    the buffer that stores every next frame, with a tail only at a row's end or an episode's. (``paper``:
    experiment=paper's one env and one step per collect: a collect's tail is freed when the next goes on with
    its episode.)"""
    env = CountingEnv(batch_size=(envs,), seed=2, reward_type="dense")
    policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, repeat=3, seed=2)
    collector = make_collector(env, policy, frames_per_batch=frames, direct=direct)
    plain, once = (
        ReplayBuffer(200, 2, 48, TRAJ_KEY, obs_keys=("obs_reward", "count"), obs_once=o) for o in (False, True)
    )  # fmt: skip
    it, collects = iter(collector), 7 if frames > 1 else 210
    for k in range(collects):
        batch = next(it)
        plain.extend(batch)
        once.extend(batch)
        if k >= 2:
            assert same_batches(plain, once, seed=k)
    collector.shutdown()
    assert once.written == collects * frames > once.capacity and (plain.stored() == once.stored()).all()
    assert once.tails < 0.5 * len(once)


def test_policy_hold_carries_across_resets():
    """``carry=True`` (the reference code's collection): a held action runs on through episode ends."""
    env = CountingEnv(batch_size=(1,), seed=3)  # episodes of at most 4 steps
    policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, repeat=5, seed=0, carry=True)
    collector = make_collector(env, policy, frames_per_batch=40)
    data = next(iter(collector))[0]
    collector.shutdown()
    a, steps = data["action"][:, 0], data["step_count"][:, 0]
    changes = [t for t in range(1, 40) if a[t] != a[t - 1]]  # the collector may call the policy once before
    assert len(changes) >= 6 and all(b - c == 5 for c, b in zip(changes, changes[1:]))
    resets = [t for t in range(1, 40) if steps[t] == 0]
    assert resets and any(t not in changes for t in resets)  # episodes ended inside a hold


@pytest.mark.parametrize(
    ("carry", "renderer", "frames"),
    [(False, "numpy", 8 * 5), (True, "numpy", 8 * 5 + 3), (False, "torch", 8 * 5), (False, "numpy", 4)],
    ids=["hold", "carry-uneven-frames", "torch-renderer", "one-step-batches"],
)
def test_direct_collector_gives_torchrls_batches(carry, renderer, frames):
    """Every key of torchrl's Collector batches, the trajectory ids too, bit for bit, over several batches
    (episodes end inside and across them); the next batch overwrites the last (store it first)."""
    made = []
    for direct in (False, True):
        env = CountingEnv(batch_size=(8,), seed=3, reward_type="dense", renderer=renderer)
        policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, repeat=3, seed=3, carry=carry)
        made.append(make_collector(env, policy, frames, direct=direct))
    assert [type(c) for c in made] == [Collector, DirectCollector]
    batches = [iter(c) for c in made]
    for _ in range(5):
        want, got = (next(b).clone() for b in batches)
        assert want.batch_size == got.batch_size == (8, max(1, frames // 8))
        assert set(want.keys(True, True)) == set(got.keys(True, True))
        for key in want.keys(True, True):
            assert want[key].dtype == got[key].dtype and torch.equal(want[key], got[key]), key
    assert (made[1].batch[TRAJ_KEY] >= 8).any()  # episodes ended
    assert next(batches[1]) is made[1].batch  # each batch in the same buffers
    for c in made:
        c.shutdown()


def test_direct_collector_applies_to_the_batched_pixel_env_on_the_cpu():
    env = CountingEnv(batch_size=(4,), seed=0)
    low, high = env.action_spec.space.low, env.action_spec.space.high
    assert isinstance(make_collector(env, RepeatedRandomPolicy(low, high), 8), DirectCollector)
    state = as_state(CountingEnv(batch_size=(4,), seed=0))  # a transformed env: torchrl's
    assert isinstance(make_collector(state, RepeatedRandomPolicy(low, high), 8), Collector)
    with pytest.raises(ValueError, match="steps a batched CountingEnv on the CPU"):
        DirectCollector(CountingEnv(seed=0), RepeatedRandomPolicy(low, high), 8)


def test_a_run_collected_directly_ends_where_torchrls_collection_does(tiny_cfg, tmp_path, monkeypatch):
    Trainer(tiny_cfg("analysis.every=0"), tmp_path / "direct").run()
    monkeypatch.setattr(DirectCollector, "applies", staticmethod(lambda env, policy: False))
    trainer = Trainer(tiny_cfg("analysis.every=0"), tmp_path / "torchrl")
    assert isinstance(trainer.collection.collector, Collector)
    trainer.run()
    headers = [(tmp_path / r / "metrics.csv").read_text().splitlines()[0] for r in ("direct", "torchrl")]
    assert headers[0] == headers[1]
    direct = metrics_rows(tmp_path / "direct")
    assert direct.shape[0] == 4
    np.testing.assert_array_equal(direct, metrics_rows(tmp_path / "torchrl"))


def test_a_run_storing_each_frame_once_ends_where_one_storing_both_does(tiny_cfg, tmp_path, monkeypatch):
    """The representation job's buffer stores each frame once (``obs_once``); with both stored, the same run."""
    once = Trainer(tiny_cfg("analysis.every=0"), tmp_path / "once")
    assert once.buffer.obs_once
    once.run()
    monkeypatch.setattr("agent.run.representation.ReplayBuffer", lambda *a, **kw: ReplayBuffer(*a, **kw | {"obs_once": False}))
    both = Trainer(tiny_cfg("analysis.every=0"), tmp_path / "both")
    assert not both.buffer.obs_once
    both.run()
    rows = metrics_rows(tmp_path / "once")
    assert rows.shape[0] == 4
    np.testing.assert_array_equal(rows, metrics_rows(tmp_path / "both"))
