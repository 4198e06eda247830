"""Shared torchrl transforms for the control suites: one observation vector or stacked uint8 frames.

Every control env leaves here with: ``observation`` float32 ``[D]`` (state tasks) or ``pixels``
uint8 ``[3 * frame_stack, H, W]`` (pixel tasks), actions in [-1, 1] (``ActionScaling``),
``step_count`` and truncation after ``episode_length / action_repeat`` steps (``StepCounter``), and
``obs_reward`` float32 ``[1]`` (:class:`ArrivalReward`), the target of the reward auxiliary task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchrl.data import Unbounded
from torchrl.envs import (
    ActionScaling,
    CatFrames,
    CatTensors,
    Compose,
    DoubleToFloat,
    EnvBase,
    ExcludeTransform,
    PermuteTransform,
    SerialEnv,
    StepCounter,
    Transform,
    TransformedEnv,
)

OBS_TYPES = ("state", "pixels")


def check_obs_type(obs_type: str) -> str:
    if obs_type not in OBS_TYPES:
        raise ValueError(f"unknown obs_type {obs_type!r}; expected one of {OBS_TYPES}")
    return obs_type


class ArrivalReward(Transform):
    """``obs_reward``: the reward received on arriving at the current observation (0 after a reset).

    The reward aux target ``p(o_t) = r(o_t)`` for control tasks. DMC rewards are computed from the
    physics state after the step, so for state-only rewards this is the reward of ``o_t`` itself
    (tasks with a control-cost term, e.g. cartpole, mix in the previous action); gymnasium's
    Pendulum-v1 scores the pre-step state and action, so there it is ``r(o_{t-1}, a_{t-1})``.
    """

    def __init__(self) -> None:
        super().__init__(in_keys=["reward"], out_keys=["obs_reward"])

    def _step(self, tensordict, next_tensordict):
        return next_tensordict.set("obs_reward", next_tensordict["reward"].clone())

    def _reset(self, tensordict, tensordict_reset):
        return tensordict_reset.set("obs_reward", self.parent.full_reward_spec["reward"].zero())

    def transform_observation_spec(self, observation_spec):
        reward = self.parent.full_reward_spec["reward"]
        observation_spec["obs_reward"] = Unbounded(shape=reward.shape, dtype=reward.dtype, device=reward.device)
        return observation_spec


def standardise(
    base: EnvBase,
    *,
    obs_type: str,
    max_steps: int,
    frame_stack: int = 3,
) -> TransformedEnv:
    """Wrap a single torchrl env with the project's observation/action conventions."""
    env = TransformedEnv(base)
    spec_keys = [k for k in base.observation_spec.keys() if k != "pixels"]
    if obs_type == "state":
        if spec_keys != ["observation"]:
            env.append_transform(CatTensors(in_keys=spec_keys, out_key="observation", del_keys=True))
    else:
        if spec_keys:
            env.append_transform(ExcludeTransform(*spec_keys))
        env.append_transform(PermuteTransform((-1, -3, -2), in_keys=["pixels"]))  # HWC -> CHW
        env.append_transform(CatFrames(N=frame_stack, dim=-3, in_keys=["pixels"]))
    env.append_transform(DoubleToFloat())
    env.append_transform(ArrivalReward())
    env.append_transform(ActionScaling())
    env.append_transform(StepCounter(max_steps=max_steps))
    return env


def batch(make_one: Callable[[int], EnvBase], num_envs: int, seed: int | None, device: str | torch.device) -> EnvBase:
    """``num_envs`` copies in a torchrl ``SerialEnv`` (one env is returned as is), seeded from ``seed`` (the
    ``SerialEnv`` chains torchrl's ``seed_generator`` from one copy to the next)."""
    if num_envs == 1:
        env = make_one(0)
    else:
        env = SerialEnv(num_envs, lambda: make_one(0))
    if seed is not None:
        env.set_seed(int(seed))
    return env.to(device)


def stacked_frames(env: EnvBase) -> int:
    """How many frames an env's observation stacks (its ``CatFrames``' ``N``); 1 when it stacks none, and for a
    batch of envs (``SerialEnv``: its copies' transforms are not looked into; the online job runs one env)."""
    transform = getattr(env, "transform", None)
    parts = list(transform) if isinstance(transform, Compose) else [transform]
    return next((int(t.N) for t in parts if isinstance(t, CatFrames)), 1)
