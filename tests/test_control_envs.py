"""Control suites: specs, seeding, pixels, action scaling, bad names; the thin DMC state env against torchrl's stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from envs import make_env, success_on_termination
from tests.conftest import ROOT, compose_cfg


def dmc(name: str, **kw) -> dict:
    return {"suite": "dmc", "name": name, **kw}


@pytest.mark.parametrize("name", ["cartpole-swingup", "reacher-easy", "walker-walk", "pendulum-swingup"])
def test_dmc_state_tasks(name):
    env = make_env({"task": dmc(name, episode_length=20), "seed": 0})
    check_env_specs(env)
    td = env.rollout(20)
    assert td["observation"].dtype == torch.float32 and td["observation"].dim() == 2
    assert td["next", "truncated"][-1].item() and td.shape == (10,)  # 20 env steps / action repeat 2
    assert env.action_spec.space.low.min() == -1 and env.action_spec.space.high.max() == 1


@pytest.mark.parametrize("num_envs", [1, 2])
@pytest.mark.parametrize(
    ("domain", "task", "repeat", "length", "limit"),
    [
        ("walker", "walk", 2, 20, None),
        ("cartpole", "swingup", 4, 40, None),
        ("reacher", "easy", 1, 7, None),
        ("quadruped", "walk", 2, 12, None),  # action bounds other than [-1, 1]
        ("walker", "walk", 3, 60, 0.25),  # the task's own time limit (10 steps) ends episodes in the middle of a frame skip
    ],
)
def test_dmc_state_env_is_torchrls_stack_bit_for_bit(num_envs, domain, task, repeat, length, limit):
    """The thin state env gives what torchrl's DMControlWrapper + the shared transforms gave: specs, seeded
    resets, every key of every step (frame skip, reward sums, truncation, auto-resets over 3 episodes)."""
    from dm_control import suite
    from torchrl.envs import DMControlWrapper

    from envs.control import batch, standardise
    from envs.dmc_state import DMCStateEnv

    kw = {"task_kwargs": {"time_limit": limit}} if limit else {}
    steps = length // repeat if not limit else -(-round(limit / 0.025) // repeat)  # agent steps per episode
    stack = batch(lambda _: standardise(DMControlWrapper(suite.load(domain, task, **kw), frame_skip=repeat), obs_type="state", max_steps=length // repeat), num_envs, 3, "cpu")
    thin = batch(lambda _: DMCStateEnv(suite.load(domain, task, **kw), frame_skip=repeat, max_steps=length // repeat), num_envs, 3, "cpu")
    for spec in ("full_observation_spec", "full_action_spec", "full_reward_spec", "full_done_spec"):
        assert getattr(thin, spec) == getattr(stack, spec), spec
    g = torch.Generator().manual_seed(0)
    want, got = stack.reset(), thin.reset()
    assert (want == got).all()
    ends = 0
    if domain == "quadruped":  # the scaling is not the identity there
        assert not torch.equal(DMCStateEnv(suite.load(domain, task), frame_skip=1, max_steps=1)._scale, torch.ones(12))
    for _ in range(3 * steps):
        action = torch.rand(stack.action_spec.shape, generator=g) * 2 - 1
        want["action"], got["action"] = action, action.clone()
        (w, want), (o, got) = stack.step_and_maybe_reset(want), thin.step_and_maybe_reset(got)
        assert set(o.keys(True, True)) == set(w.keys(True, True))
        assert all(torch.equal(o[k], w[k]) for k in w.keys(True, True)), {k: (o[k], w[k]) for k in w.keys(True, True)}
        ends += int(w["next", "done"].sum())
    assert ends >= 2 * num_envs  # the comparison crossed episode ends and resets
    check_env_specs(thin)


def test_dmc_seeding():
    def obs(seed):
        torch.manual_seed(0)
        return make_env({"task": dmc("reacher-easy"), "seed": seed}).rollout(3)["observation"]

    assert torch.equal(obs(1), obs(1)) and not torch.equal(obs(1), obs(2))


def test_dmc_pixels_frame_stack():
    env = make_env({"task": dmc("cartpole-swingup", obs_type="pixels", episode_length=10), "seed": 0})
    check_env_specs(env)
    td = env.rollout(4)
    assert td["pixels"].shape == (4, 9, 64, 64) and td["pixels"].dtype == torch.uint8
    assert td["pixels"].float().std() > 1  # something was drawn
    torch.testing.assert_close(td["next", "pixels"][0, 6:], td["pixels"][1, 6:])  # newest frame last


def test_unusable_gl_backend_says_what_to_set(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "wgl")
    with pytest.raises(RuntimeError, match="MUJOCO_GL='wgl' cannot render.*egl, osmesa, glfw"):
        make_env({"task": dmc("cartpole-swingup", obs_type="pixels")})


def test_headless_machine_renders_without_any_export():
    """As the README's test command runs on a fresh headless machine: no MUJOCO_GL, no display."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    code = (
        "import os, envs; from envs import make_env;"
        "env = make_env({'task': {'suite': 'dmc', 'name': 'cartpole-swingup', 'obs_type': 'pixels', 'episode_length': 4}, 'seed': 0});"
        "px = env.rollout(2)['pixels']; print(os.environ['MUJOCO_GL'], float(px.float().std()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    backend, std = out.stdout.split()
    assert backend == "egl" and float(std) > 1


def test_gym_pendulum_actions_are_rescaled():
    env = make_env({"task": {"suite": "gym", "name": "Pendulum-v1", "episode_length": 8}, "seed": 0})
    check_env_specs(env)
    assert env.base_env.action_spec.space.high.item() == 2.0  # native range [-2, 2] ...
    assert env.action_spec.space.high.item() == 1.0  # ... seen as [-1, 1]
    td = env.rollout(8)
    assert td.shape == (8,) and td["next", "truncated"][-1].item()


def test_batched_control_env():
    env = make_env({"task": dmc("cartpole-swingup"), "seed": 0, "num_envs": 2})
    check_env_specs(env)
    assert env.rollout(3)["observation"].shape == (2, 3, 5)


@pytest.mark.parametrize(
    "task, match",
    [
        (dmc("cartpole-flip"), "unknown DMC task 'cartpole-flip'; available: .*cartpole-swingup"),
        (dmc("cartpole"), "'<domain>-<task>'"),
        (dmc("cartpole-swingup", obs_type="depth"), "unknown obs_type"),
        ({"suite": "gym", "name": "NoSuchEnv-v0"}, "unknown gym task"),
        ({"suite": "gym", "name": "Pendulum-v1", "success_on_termination": "yes"}, "must be true or false"),
        (dmc("cartpole-swingup", success_on_termination=True), "unknown dmc task option"),
    ],
)
def test_bad_control_tasks(task, match):
    with pytest.raises(ValueError, match=match):
        make_env({"task": task})


def test_only_tasks_that_end_at_a_goal_have_a_success_rate():
    """Termination is success on the counting task and on gym tasks that say so; DMC never terminates,
    and a gym task may terminate by failing (Hopper falls), so by default it has no success rate."""
    assert success_on_termination({"suite": "counting"})
    assert not success_on_termination(dmc("cartpole-swingup"))
    assert not success_on_termination(compose_cfg("task=gym/Pendulum-v1").task)
    assert not success_on_termination({"suite": "gym", "name": "Hopper-v5"})
    assert success_on_termination({"suite": "gym", "name": "MountainCarContinuous-v0", "success_on_termination": True})
    with pytest.raises(ValueError, match="unknown task suite 'atari'"):
        success_on_termination({"suite": "atari"})


def test_hydra_task_configs_compose():
    cfg = compose_cfg("task=dmc/reacher-easy")
    assert cfg.task.suite == "dmc" and cfg.task.name == "reacher-easy"
    assert compose_cfg("task=gym/Pendulum-v1").task.name == "Pendulum-v1"


def test_pjepa_trains_on_a_state_control_task(tmp_path):
    from agent.run.representation import Trainer

    cfg = compose_cfg("task=dmc/cartpole-swingup", "aux=random", "data.num_envs=2", "steps=6", "analysis.every=0")
    trainer = Trainer(cfg, tmp_path)
    assert trainer.agent.wm.kind == "state"
    assert trainer.run() == {}  # the count analysis is for the counting task only
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    reward_aux = compose_cfg("task=dmc/cartpole-swingup", "aux=reward", "data.num_envs=2", "steps=3", "analysis.every=0")
    Trainer(reward_aux, tmp_path / "b").run()  # the reward aux reads the arrival reward (obs_reward)
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("task", [dmc("cartpole-swingup", episode_length=20), {"suite": "gym", "name": "Pendulum-v1", "episode_length": 10}])
def test_obs_reward_is_the_reward_of_arriving_at_the_observation(task):
    td = make_env({"task": task, "seed": 0}).rollout(10)
    assert td["obs_reward"].shape == td["next", "reward"].shape and td["obs_reward"].dtype == torch.float32
    assert td["obs_reward"][0].item() == 0.0  # nothing was received before the reset
    torch.testing.assert_close(td["obs_reward"][1:], td["next", "reward"][:-1])
    torch.testing.assert_close(td["next", "obs_reward"], td["next", "reward"])
    assert td["next", "reward"].abs().sum() > 0


def test_obs_reward_is_zero_after_every_reset_of_a_batched_env():
    env = make_env({"task": dmc("cartpole-swingup", episode_length=6), "seed": 0}, num_envs=2)  # 3 agent steps
    td, resets = env.reset(), 0
    for _ in range(7):
        td.set("action", env.action_spec.rand())
        stepped, td = env.step_and_maybe_reset(td)
        done = stepped["next", "done"].squeeze(-1)
        assert (td["obs_reward"][done] == 0).all()
        torch.testing.assert_close(td["obs_reward"][~done], stepped["next", "reward"][~done])
        resets += int(done.sum())
    assert resets == 4


def test_aux_keys_missing_from_an_env_fail_clearly():
    from types import SimpleNamespace

    from agent.run.common import aux_data_keys

    env = SimpleNamespace(observation_spec={"observation": None})
    aux = SimpleNamespace(name="reward", data_keys=("obs", "obs_reward"))
    with pytest.raises(ValueError, match="needs \\['obs_reward'\\] from the env"):
        aux_data_keys(aux, env, "custom")


def test_any_suite_task_runs_by_name_without_a_config_file():
    cfg = compose_cfg("agent=tdmpc2", "task=dmc", "task.name=cheetah-run", "task.episode_length=8")
    env = make_env({"task": dict(cfg.task), "seed": 0})
    assert env.rollout(4)["observation"].shape[-1] == 17  # cheetah's state
    cfg = compose_cfg("agent=tdmpc2", "task=gym", "task.name=MountainCarContinuous-v0")
    assert cfg.task.episode_length is None
    env = make_env({"task": dict(cfg.task), "seed": 0})
    assert env.rollout(3)["observation"].shape == (3, 2)
    from agent.agents.factory import episode_length

    assert episode_length(dict(cfg.task)) == 999  # gymnasium's own limit for the task
    with pytest.raises(ValueError, match="unknown DMC task 'cheetah-walk'; available: .*cheetah-run"):
        make_env({"task": dict(compose_cfg("agent=tdmpc2", "task=dmc", "task.name=cheetah-walk").task), "seed": 0})
