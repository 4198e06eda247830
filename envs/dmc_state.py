"""A DeepMind Control task with state observations as one torchrl env: no wrapper, no transform stack.

It gives what ``standardise(DMControlWrapper(env, frame_skip=k), obs_type="state", max_steps=m)`` gives,
key by key and bit for bit (tested): ``observation`` float32 ``[D]`` (the task's state entries flattened in
sorted key order, as ``CatTensors``; entries that are matrices, e.g. manipulator's ``arm_pos``, which
``CatTensors`` could not join, work here too), actions in [-1, 1] scaled to the task's bounds in float32
(``ActionScaling`` after ``DoubleToFloat``), rewards summed in float64 over the frame skip and stopped at an
episode end, the same ``obs_reward``, ``step_count``, ``done`` / ``terminated`` / ``truncated`` and specs, and
the same seeding. The part of a step above the physics costs about half (1.4-1.7x the env steps/s on
walker-walk and cartpole-swingup: docs/benchmarks.md, "The DMC state env").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

if TYPE_CHECKING:
    from dm_control.rl.control import Environment


class DMCStateEnv(EnvBase):
    """One dm_control ``Environment`` (``suite.load(...)``) stepping ``frame_skip`` times per action,
    truncated after ``max_steps`` agent steps (``StepCounter``) or at the task's own time limit."""

    _has_frame_skip = True  # it skips frames itself: torchrl must not add a FrameSkipTransform for ``frame_skip``

    def __init__(self, env: Environment, *, frame_skip: int, max_steps: int, device: str | torch.device = "cpu") -> None:
        super().__init__(device=device, batch_size=torch.Size([]))
        self.is_closed = False  # as torchrl's wrappers: close() (also at deletion) closes the dm_control env
        self._env, self.frame_skip, self.max_steps = env, int(frame_skip), int(max_steps)
        if self.frame_skip < 1 or self.max_steps < 1:
            raise ValueError(f"frame_skip and max_steps must be >= 1, got {frame_skip}, {max_steps}")
        obs = env.observation_spec()
        self._keys = sorted(obs)  # CatTensors' order
        dim = sum(int(np.prod(obs[k].shape)) for k in self._keys)
        act = env.action_spec()
        low, high = (torch.tensor(np.array(b, dtype=np.float64)).float() for b in (act.minimum, act.maximum))
        self._loc, self._scale = (high + low) / 2, (high - low) / 2  # ActionScaling on the float32 bounds
        flag = Categorical(2, shape=(1,), dtype=torch.bool)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(dim,), dtype=torch.float32),
            obs_reward=Unbounded(shape=(1,), dtype=torch.float32),
            step_count=Bounded(low=0, high=torch.iinfo(torch.int64).max, shape=(1,), dtype=torch.int64),
        )
        self.action_spec = Bounded(low=-1.0, high=1.0, shape=act.shape, dtype=torch.float32)
        self.reward_spec = Unbounded(shape=(1,), dtype=torch.float32)
        self.done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone())

    def _observation(self, timestep) -> torch.Tensor:
        parts = [np.asarray(timestep.observation[k], dtype=np.float64).ravel() for k in self._keys]
        return torch.from_numpy(np.concatenate(parts)).float()

    def _out(self, obs: torch.Tensor, obs_reward: torch.Tensor, steps: int, terminated: bool, truncated: bool) -> TensorDict:
        flags = {k: torch.tensor([v]) for k, v in (("done", terminated or truncated), ("terminated", terminated), ("truncated", truncated))}
        out = {"observation": obs, "obs_reward": obs_reward, "step_count": torch.tensor([steps]), **flags}
        return TensorDict(out, batch_size=[], device=self.device)  # not .to(device): 5x the cost

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        timestep = self._env.reset()
        return self._out(self._observation(timestep), torch.zeros(1), 0, False, False)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        action = tensordict["action"].detach().cpu().float()
        if action.shape != self._scale.shape:
            raise ValueError(f"expected an action of shape {tuple(self._scale.shape)}, got {tuple(action.shape)}")
        action = (action * self._scale + self._loc).double().numpy()
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.frame_skip):
            timestep = self._env.step(action)
            reward = reward + (timestep.reward or 0.0)
            if timestep.last():  # discount 1 at an end: the time limit; 0: a terminal state
                truncated = bool(np.isclose(timestep.discount, 1))
                terminated = not truncated
                break
        steps = int(tensordict["step_count"]) + 1
        r = torch.tensor([reward], dtype=torch.float64).float()
        out = self._out(self._observation(timestep), r.clone(), steps, terminated, truncated or steps >= self.max_steps)
        return out.set("reward", r.to(self.device))

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            return
        self._env.task._random = np.random.RandomState(seed)  # as torchrl's DMControlWrapper, which then resets once
        self._env.reset()

    def close(self, *, raise_if_closed: bool = True) -> None:
        if not self.is_closed:
            self._env.close()
        self.is_closed = True
