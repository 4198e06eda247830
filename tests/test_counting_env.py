"""The counting environment: specs, seeding, rendering, dynamics, rewards, batching, bad input."""

from __future__ import annotations

import copy

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy import ndimage
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from envs import make_env
from envs.counting import CountingEnv, count_reward
from envs.rng import StreamRNG
from envs.shapes import SHAPES, _place_slotwise, make_stamps, place_objects

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def act(env: CountingEnv, values) -> TensorDict:
    a = torch.as_tensor(values, dtype=torch.float32).reshape(*env.batch_size, 1)
    return env.step(TensorDict({"action": a}, batch_size=env.batch_size))["next"]


@pytest.mark.parametrize("batch_size", [(), (1,), (5,)])
def test_specs(batch_size):
    check_env_specs(CountingEnv(batch_size=batch_size, seed=0))


def test_specs_dead_zone_dense():
    check_env_specs(CountingEnv(batch_size=(3,), action_mode="dead_zone", reward_type="dense", seed=1))


def test_seeding_reproducible_and_seed_sensitive():
    def run(seed):
        env = CountingEnv(batch_size=(8,), seed=seed)
        torch.manual_seed(0)  # rollout's random actions come from the spec, i.e. torch's RNG
        return env.rollout(12, break_when_any_done=False)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["next", "reward"], b["next", "reward"])
    assert not torch.equal(a["pixels"], c["pixels"])
    env = CountingEnv(batch_size=(4,), seed=3)
    first = env.reset()["pixels"]
    env.set_seed(3)
    assert torch.equal(env.reset()["pixels"], first)


def test_rendering_counts_every_shape_and_count():
    env = CountingEnv(batch_size=(2048,), seed=0)
    td = env.reset()
    stamps = make_stamps(env.radius)
    frames, counts = td["pixels"].numpy(), td["count"].numpy()
    seen = set()
    for frame, n, shape, color in zip(frames, counts, env._shape, env._color):
        seen.add((int(n), int(shape)))
        mask = frame.any(0)
        labels, found = ndimage.label(mask, structure=EIGHT_CONNECTED)
        assert found == n, f"{SHAPES[shape]}: {found} components for count {n}"
        assert (frame[:, mask] == color[:, None]).all()  # one colour, uniform
        for k in range(1, found + 1):  # every object is a whole stamp: inside the frame, untouched
            assert (labels == k).sum() == stamps[shape].sum()
    assert seen == {(n, s) for n in range(9) for s in range(len(SHAPES))}


def test_render_matches_observation_and_saves(tmp_path):
    env = CountingEnv(batch_size=(3,), seed=2)
    td = env.reset()
    assert np.array_equal(env.render(), td["pixels"].numpy())
    nxt = act(env, [0.5, -0.5, 0.5])
    assert np.array_equal(env.render(), nxt["pixels"].numpy())
    path = tmp_path / "frame.png"
    iio.imwrite(path, nxt["pixels"][0].permute(1, 2, 0).numpy())
    assert np.array_equal(iio.imread(path), nxt["pixels"][0].permute(1, 2, 0).numpy())


def test_colour_range_and_count_distribution():
    env = CountingEnv(batch_size=(4096,), seed=5)
    td = env.reset()
    assert env._color.min() >= 30 and env._color.max() < 226
    freq = np.bincount(td["count"].numpy(), minlength=9) / 4096
    assert np.abs(freq - 1 / 9).max() < 0.03


def test_two_action_dynamics_and_clipping():
    env = CountingEnv(batch_size=(4,), seed=0)
    env.reset()
    env._count[:] = [0, 8, 3, 3]
    nxt = act(env, [-1.0, 1.0, 0.0, -1e-3])  # a >= 0 adds, a < 0 removes; clipped to [0, 8]
    assert nxt["count"].tolist() == [0, 8, 4, 2]


def test_dead_zone_noop_returns_identical_frame():
    env = CountingEnv(batch_size=(3,), action_mode="dead_zone", target=0, seed=0)
    env.reset()
    env._count[:] = [5, 5, 5]
    env._redraw(np.arange(3))
    before = env.render()
    nxt = act(env, [0.3, -0.5, 0.5])
    assert nxt["count"].tolist() == [5, 4, 6]
    assert np.array_equal(nxt["pixels"][0].numpy(), before[0])  # no-op: same frame
    assert not np.array_equal(nxt["pixels"][1].numpy(), before[1])


def test_positions_resampled_when_count_changes():
    env = CountingEnv(batch_size=(64,), target=0, seed=1)
    env.reset()
    env._count[:] = 4
    env._redraw(np.arange(64))
    pos_before = env._pos[:, :4].copy()
    act(env, [1.0] * 64)
    assert (env._pos[:, :4] != pos_before).any(axis=(1, 2)).mean() > 0.9


def test_termination_and_truncation():
    env = CountingEnv(batch_size=(2,), target=4, seed=0)
    env.reset()
    env._count[:] = [3, 8]
    nxt = act(env, [1.0, 1.0])  # env 0 reaches the target
    assert nxt["terminated"].squeeze(-1).tolist() == [True, False]
    assert nxt["done"].squeeze(-1).tolist() == [True, False]
    assert not nxt["truncated"].any()
    for step in range(3):
        nxt = act(env, [1.0, 1.0])  # env 1 stays at 8 (clipped)
    assert nxt["truncated"].squeeze(-1).tolist()[1] is True
    assert nxt["terminated"].squeeze(-1).tolist()[1] is False
    assert nxt["step_count"].squeeze(-1).tolist()[1] == 4


def test_count_reward_values():
    counts = np.arange(9)
    np.testing.assert_array_equal(count_reward(counts, 4, 8, "sparse"), (counts == 4).astype(np.float32))
    dense = count_reward(counts, 4, 8, "dense")
    expected = np.clip(1 - np.abs(counts - 4) / 8 + (counts == 4), 0, 2)
    np.testing.assert_allclose(dense, expected)
    assert dense[4] == 2.0 and dense[0] == 0.5


@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
def test_step_reward_is_post_action_and_obs_reward_is_current(reward_type):
    env = CountingEnv(batch_size=(9,), target=4, reward_type=reward_type, seed=0)
    td = env.reset()
    np.testing.assert_allclose(td["obs_reward"].squeeze(-1), count_reward(td["count"].numpy(), 4, 8, reward_type))
    nxt = act(env, np.linspace(-1, 1, 9))
    expected = count_reward(nxt["count"].numpy(), 4, 8, reward_type)
    np.testing.assert_allclose(nxt["reward"].squeeze(-1), expected)
    np.testing.assert_allclose(nxt["obs_reward"].squeeze(-1), expected)


def test_batched_equals_single_envs():
    n, seed = 6, 11
    batched = CountingEnv(batch_size=(n,), seed=seed)
    singles = [CountingEnv(seed=seed + i) for i in range(n)]
    actions = torch.rand(10, n, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tb = batched.reset()
    ts = [e.reset() for e in singles]
    for t in range(10):
        assert torch.equal(tb["pixels"], torch.stack([s["pixels"] for s in ts]))
        tb = act(batched, actions[t])
        ts = [act(e, actions[t, i]) for i, e in enumerate(singles)]
        for key in ("reward", "done", "count"):
            assert torch.equal(tb[key], torch.stack([s[key] for s in ts]))
        reset = tb["done"]
        if reset.any():  # partial reset of the batch vs reset of the finished singles
            tb = batched.reset(tb.clone().set("_reset", reset))
            ts = [e.reset() if d else s for e, s, d in zip(singles, ts, reset.squeeze(-1).tolist())]


def test_torch_renderer_draws_the_numpy_frames():
    """The torch renderer (frames drawn and kept on the env's device) gives the numpy renderer's frames."""
    n = 32
    envs = {r: CountingEnv(batch_size=(n,), seed=5, renderer=r, reward_type="dense") for r in ("numpy", "torch")}
    assert envs["torch"].renderer == "torch" and CountingEnv().renderer == "numpy"  # CPU default: numpy
    actions = torch.rand(12, n, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tds = {r: e.reset() for r, e in envs.items()}
    for t in range(12):
        assert torch.equal(tds["numpy"]["pixels"], tds["torch"]["pixels"])
        assert np.array_equal(envs["numpy"].render(), envs["torch"].render())
        stepped = {r: e.step(tds[r].clone().set("action", actions[t])) for r, e in envs.items()}
        assert torch.equal(stepped["numpy"]["next", "reward"], stepped["torch"]["next", "reward"])
        tds = {r: e.reset(s["next"].clone().set("_reset", s["next", "done"])) for (r, e), s in zip(envs.items(), stepped.values())}
    with pytest.raises(ValueError, match="unknown renderer 'opengl'"):
        CountingEnv(renderer="opengl")


def test_partial_reset_only_touches_masked_envs():
    env = CountingEnv(batch_size=(4,), seed=0)
    td = env.reset()
    mask = torch.tensor([[True], [False], [True], [False]])
    out = env.reset(td.clone().set("_reset", mask))
    assert torch.equal(out["pixels"][1], td["pixels"][1]) and torch.equal(out["pixels"][3], td["pixels"][3])
    assert torch.equal(torch.from_numpy(env.render()), out["pixels"])


@pytest.mark.parametrize(
    "action, error, match",
    [
        (torch.zeros(3), ValueError, "shape"),
        (torch.zeros(3, 2), ValueError, "shape"),
        (torch.tensor([[0.0], [float("nan")], [0.0]]), ValueError, "NaN"),
        (torch.tensor([[0.0], [1.5], [0.0]]), ValueError, r"\[-1, 1\]"),
        (torch.zeros(3, 1, dtype=torch.int64), TypeError, "float"),
    ],
)
def test_bad_actions_raise_clearly(action, error, match):
    env = CountingEnv(batch_size=(3,), seed=0)
    env.reset()
    with pytest.raises(error, match=match):
        env.step(TensorDict({"action": action}, batch_size=(3,)))


@pytest.mark.parametrize("target", [-1, 9, 4.5, True])
def test_bad_target_raises(target):
    with pytest.raises(ValueError, match="target count"):
        CountingEnv(target=target)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="action_mode"):
        CountingEnv(action_mode="three")
    with pytest.raises(ValueError, match="reward_type"):
        CountingEnv(reward_type="shaped")


def test_make_env_builds_and_never_writes_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"task": OmegaConf.load("configs/task/counting.yaml"), "seed": 3, "num_envs": 5})
    before = copy.deepcopy(OmegaConf.to_container(cfg))
    env = make_env(cfg)
    check_env_specs(env)
    assert env.batch_size == (5,) and env.target == 4
    assert OmegaConf.to_container(cfg) == before
    cfg.task.target = 6
    assert make_env(cfg).target == 6


@pytest.mark.parametrize(
    "task, match",
    [
        ({"suite": "atari"}, "unknown task suite 'atari'.*counting"),
        ({"suite": "counting", "name": "count4"}, "unknown counting task"),
        ({"suite": "counting", "target": 12}, "target count"),
        ({"suite": "counting", "colour": "red"}, "unknown counting task option"),
        ({"suite": "counting", "obs_type": "rgb"}, "unknown obs_type 'rgb'"),
    ],
)
def test_make_env_bad_task(task, match):
    with pytest.raises(ValueError, match=match):
        make_env({"task": task})


def test_state_observation_is_the_one_hot_count():
    env = make_env({"task": {"suite": "counting", "obs_type": "state"}, "num_envs": 6, "seed": 0})
    check_env_specs(env)
    assert "pixels" not in env.observation_spec.keys() and env.observation_spec["observation"].shape == (6, 9)
    td = env.reset()
    for _ in range(5):
        obs = td["observation"]
        assert obs.dtype == torch.float32 and torch.equal(obs.argmax(-1), td["count"]) and torch.equal(obs.sum(-1), torch.ones(6))
        td = env.step_and_maybe_reset(td.set("action", env.action_spec.rand()))[1]


def test_representation_job_refuses_state_observations(tiny_cfg, tmp_path):
    from agent.run.representation import Trainer

    with pytest.raises(ValueError, match="obs_type=state.*agent=tdmpc2"):
        Trainer(tiny_cfg("task.obs_type=state"), tmp_path)


@pytest.mark.parametrize(("radius", "size", "max_objects"), [(3, 64, 8), (3, 30, 8), (2, 20, 6)], ids=["paper", "crowded", "tight"])
def test_placing_all_slots_at_once_equals_slot_by_slot(radius, size, max_objects):
    """The same centres and the same stream positions as placing slot by slot, for envs drawn at random;
    the crowded frames make some envs need more than their first 8 candidates (the slot-by-slot path)."""
    fast, slow = StreamRNG(64), StreamRNG(64)
    fast.seed(7), slow.seed(7)
    pick, retried = np.random.default_rng(0), 0
    for _ in range(30):
        idx = np.flatnonzero(pick.random(64) < 0.5)
        before = fast.counters[idx].copy()
        got = place_objects(fast, idx, max_objects, radius, size)
        assert np.array_equal(got, _place_slotwise(slow, idx, max_objects, radius, size, 50))
        assert np.array_equal(fast.counters, slow.counters)
        retried += int((fast.counters[idx] - before != 8 * max_objects).sum())
    if size < 64:
        assert retried > 0
