"""The paper's counting environment as a batched torchrl ``EnvBase``.

A 64x64 RGB frame shows 0..8 identical objects (one shape and one colour per episode). The agent
changes the count with a scalar action in [-1, 1] and must reach the target count. See
``../shared/REFERENCE.md`` for the facts this follows; deviations are listed in the README.

Keys (batch ``B`` = ``batch_size``):
    pixels      uint8   [B, 3, 64, 64]  the observation, exactly what ``render`` returns
    count       int64   [B]             objects in the frame (the label the analysis uses)
    obs_reward  float32 [B, 1]          reward of the current observation r(o_t): the aux target
    step_count  int64   [B, 1]          steps since reset
    action      float32 [B, 1]          in [-1, 1]
    reward      float32 [B, 1]          r(o_{t+1}) of the post-action count
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite
from torchrl.envs import (
    Compose,
    EnvBase,
    ExcludeTransform,
    TransformedEnv,
    UnaryTransform,
)

from envs.control import check_obs_type
from envs.rng import StreamRNG
from envs.shapes import make_stamps, place_objects, render, render_torch

ACTION_MODES = ("two_action", "dead_zone")
REWARD_TYPES = ("sparse", "dense")
RENDERERS = ("numpy", "torch")


def count_reward(count: np.ndarray, target: int, max_objects: int, kind: str) -> np.ndarray:
    """Reward of an observation with ``count`` objects: float32 array shaped like ``count``.

    sparse: 1 at the target else 0; dense: ``1 - |count - target| / max_objects``, +1 at the
    target, clipped to [0, 2].
    """
    hit = (count == target).astype(np.float32)
    if kind == "sparse":
        return hit
    dense = 1.0 - np.abs(count - target).astype(np.float32) / max_objects + hit
    return np.clip(dense, 0.0, 2.0)


class CountingEnv(EnvBase):
    """Batched counting environment.

    Args:
        target: target count in ``0..max_objects`` (task ``counting4`` is target 4).
        batch_size: ``()`` for one env or ``(N,)`` for N envs simulated together.
        action_mode: ``"two_action"`` (a < 0 removes, a >= 0 adds; the paper's runs) or
            ``"dead_zone"`` (a < -1/3 removes, a > 1/3 adds, otherwise no-op).
        reward_type: ``"sparse"`` or ``"dense"``.
        max_objects: most objects in a frame (8).
        max_steps: steps before truncation (4).
        radius: object half-size r in pixels (3).
        size: frame side in pixels (64).
        seed: seed of env ``i``'s stream is ``seed + i``; ``None`` for fresh entropy.
        device: where returned tensors live; the simulation (counts, positions) runs in numpy on the CPU.
        renderer: ``"numpy"`` or ``"torch"`` (frames drawn and kept on ``device``: on a GPU only the
            small state crosses to it, never a frame); ``None`` picks torch off the CPU. Same frames.
    """

    batch_locked = True

    def __init__(
        self,
        target: int = 4,
        batch_size: tuple[int, ...] | list[int] | torch.Size = (),
        action_mode: str = "two_action",
        reward_type: str = "sparse",
        max_objects: int = 8,
        max_steps: int = 4,
        radius: int = 3,
        size: int = 64,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        renderer: str | None = None,
    ) -> None:
        batch_size = torch.Size(batch_size)
        if len(batch_size) > 1:
            raise ValueError(f"batch_size must be () or (N,), got {tuple(batch_size)}")
        if not isinstance(max_objects, int) or max_objects < 1:
            raise ValueError(f"max_objects must be a positive int, got {max_objects!r}")
        if not isinstance(target, (int, np.integer)) or isinstance(target, bool) or not 0 <= target <= max_objects:
            raise ValueError(f"target count must be an int in 0..{max_objects}, got {target!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {reward_type!r}; expected one of {REWARD_TYPES}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if size < 2 * radius + 1 or radius < 1:
            raise ValueError(f"radius {radius} does not fit a {size}x{size} frame")
        super().__init__(device=device, batch_size=batch_size)
        self.renderer = renderer or ("numpy" if self.device.type == "cpu" else "torch")
        if self.renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}; expected one of {RENDERERS}")
        self.target = int(target)
        self.action_mode = action_mode
        self.reward_type = reward_type
        self.max_objects = max_objects
        self.max_steps = max_steps
        self.radius = radius
        self.size = size
        self.n = int(math.prod(batch_size)) if len(batch_size) else 1
        self._stamps = make_stamps(radius)
        self._rng = StreamRNG(self.n)
        self._count = np.zeros(self.n, dtype=np.int64)
        self._shape = np.zeros(self.n, dtype=np.int64)
        self._color = np.zeros((self.n, 3), dtype=np.uint8)
        self._pos = np.zeros((self.n, max_objects, 2), dtype=np.int64)
        self._steps = np.zeros(self.n, dtype=np.int64)
        if self.renderer == "torch":
            self._frames = torch.zeros((self.n, 3, size, size), dtype=torch.uint8, device=self.device)
            self._stamps_t = torch.from_numpy(self._stamps).to(self.device)
        else:
            self._frames = np.zeros((self.n, 3, size, size), dtype=np.uint8)
        self._make_specs()
        self._rng.seed(seed)

    # ---------------------------------------------------------------- specs
    def _make_specs(self) -> None:
        b = self.batch_size
        self.observation_spec = Composite(
            pixels=Bounded(0, 255, shape=(*b, 3, self.size, self.size), dtype=torch.uint8, device=self.device),
            count=Bounded(0, self.max_objects, shape=b, dtype=torch.int64, device=self.device),
            obs_reward=Bounded(0.0, 2.0, shape=(*b, 1), dtype=torch.float32, device=self.device),
            step_count=Bounded(0, self.max_steps, shape=(*b, 1), dtype=torch.int64, device=self.device),
            shape=b,
            device=self.device,
        )
        self.action_spec = Bounded(-1.0, 1.0, shape=(*b, 1), dtype=torch.float32, device=self.device)
        self.reward_spec = Bounded(0.0, 2.0, shape=(*b, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, shape=(*b, 1), dtype=torch.bool, device=self.device)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=b, device=self.device)

    # ---------------------------------------------------------------- helpers
    def _set_seed(self, seed: int | None) -> None:
        self._rng.seed(seed)

    def _redraw(self, idx: np.ndarray) -> None:
        """New object positions for envs ``idx``, then re-render their frames."""
        if len(idx) == 0:
            return
        self._pos[idx] = place_objects(self._rng, idx, self.max_objects, self.radius, self.size)
        state = (self._count[idx], self._shape[idx], self._color[idx], self._pos[idx])
        if self.renderer == "torch":
            on_device = [torch.from_numpy(a).to(self.device) for a in (idx, *state)]
            self._frames[on_device[0]] = render_torch(*on_device[1:], self._stamps_t, self.size)
        else:
            self._frames[idx] = render(*state, self._stamps, self.size)

    def observe(self) -> dict[str, torch.Tensor]:
        """The observation keys of every env, as views of the env's state (``obs_reward`` aside): valid until
        the next step or reset changes it (:meth:`_out` copies them; a direct collector copies them into its batch)."""
        b = self.batch_size
        rew = count_reward(self._count, self.target, self.max_objects, self.reward_type)
        frames = self._frames if self.renderer == "torch" else torch.from_numpy(self._frames)
        return {
            "pixels": frames.reshape(*b, 3, self.size, self.size),
            "count": torch.from_numpy(self._count).reshape(b),
            "obs_reward": torch.from_numpy(rew).reshape(*b, 1),
            "step_count": torch.from_numpy(self._steps).reshape(*b, 1),
        }

    def _out(self) -> dict[str, torch.Tensor]:
        return {k: v if k == "obs_reward" else v.clone() for k, v in self.observe().items()}

    def _td(self, data: dict[str, torch.Tensor]) -> TensorDict:
        return TensorDict(data, batch_size=self.batch_size).to(self.device)

    # ---------------------------------------------------------------- reset / step
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is None:
            idx = np.arange(self.n)
        else:
            idx = np.flatnonzero(mask.reshape(self.n).cpu().numpy())
        self.reset_envs(idx)
        out = self._out()
        false = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        out.update(done=false, terminated=false.clone(), truncated=false.clone())
        return self._td(out)

    def _check_action(self, action: torch.Tensor) -> np.ndarray:
        expected = (*self.batch_size, 1)
        if tuple(action.shape) != expected:
            raise ValueError(f"action must have shape {expected} (batch_size + (1,)), got {tuple(action.shape)}")
        if not torch.is_floating_point(action):
            raise TypeError(f"action must be a float tensor, got dtype {action.dtype}")
        a = action.detach().reshape(self.n).cpu().double().numpy()
        if np.isnan(a).any():
            raise ValueError(f"action contains NaN at env indices {np.flatnonzero(np.isnan(a)).tolist()}")
        if (np.abs(a) > 1.0).any():
            bad = a[np.abs(a) > 1.0]
            raise ValueError(f"action must lie in [-1, 1]; got values {bad[:5].tolist()}")
        return a

    def _delta(self, a: np.ndarray) -> np.ndarray:
        """Change of count for actions ``a`` ``[N]``: int64 in {-1, 0, 1}."""
        if self.action_mode == "two_action":
            return np.where(a < 0, -1, 1).astype(np.int64)
        return np.where(a < -1 / 3, -1, np.where(a > 1 / 3, 1, 0)).astype(np.int64)

    # ---------------------------------------------------------------- the simulation (also stepped directly)
    def reset_envs(self, idx: np.ndarray) -> None:
        """New episodes for the envs ``idx`` (int array): count, shape and colour drawn, steps zeroed, frames drawn."""
        if len(idx):
            draws = self._rng.integers(idx, 5, 2**31)
            self._count[idx] = draws[:, 0] % (self.max_objects + 1)
            self._shape[idx] = draws[:, 1] % len(self._stamps)
            self._color[idx] = (30 + draws[:, 2:5] % 196).astype(np.uint8)
            self._steps[idx] = 0
            self._redraw(idx)

    def advance(self, action: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``action [*batch, 1]`` (checked) to every env: counts change, changed frames are redrawn.

        Returns:
            ``terminated`` (the target count reached) and ``truncated`` (``max_steps`` reached without it),
            bool arrays ``[N]``.
        """
        a = self._check_action(action)
        new = np.clip(self._count + self._delta(a), 0, self.max_objects)
        changed = np.flatnonzero(new != self._count)
        self._count = new
        self._steps += 1
        self._redraw(changed)  # a no-op keeps positions: the frame is identical
        terminated = self._count == self.target
        return terminated, (self._steps >= self.max_steps) & ~terminated

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        terminated, truncated = self.advance(tensordict.get("action"))
        out = self._out()
        b1 = (*self.batch_size, 1)
        terminated = torch.from_numpy(terminated).reshape(b1)
        truncated = torch.from_numpy(truncated).reshape(b1)
        out.update(
            reward=out["obs_reward"].clone(),
            terminated=terminated,
            truncated=truncated,
            done=terminated | truncated,
        )
        return self._td(out)

    # ---------------------------------------------------------------- rendering
    def render(self) -> np.ndarray:
        """The current frames, identical to the last ``pixels``: uint8 ``[*batch, 3, H, W]``."""
        frames = self._frames.cpu().numpy() if self.renderer == "torch" else self._frames.copy()
        return frames.reshape(*self.batch_size, 3, self.size, self.size)


TASK_KEYS = ("suite", "name", "target", "action_mode", "reward_type", "max_objects", "max_steps", "radius", "size", "obs_type", "renderer")


def _one_hot(count: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(count, num_classes).float()


def as_state(env: CountingEnv) -> TransformedEnv:
    """The count itself as the observation, for perception-free runs (an upper bound on planning).

    Replaces ``pixels`` by ``observation``: float32 one-hot ``[*batch, max_objects + 1]`` of ``count``.
    """
    one_hot = UnaryTransform(["count"], ["observation"], fn=partial(_one_hot, num_classes=env.max_objects + 1))
    return TransformedEnv(env, Compose(one_hot, ExcludeTransform("pixels")))


def build(task: dict, *, num_envs: int, seed: int | None, device: str) -> EnvBase:
    """``make_env`` entry for the counting suite: task names are ``counting<target>``.

    ``obs_type=pixels`` (default) is the paper's task; ``obs_type=state`` observes the count (:func:`as_state`).
    """
    unknown = sorted(set(task) - set(TASK_KEYS))
    if unknown:
        raise ValueError(f"unknown counting task option(s) {unknown}; expected keys among {list(TASK_KEYS)}")
    obs_type = check_obs_type(task.get("obs_type", "pixels"))
    name = str(task.get("name") or f"counting{task.get('target', 4)}")
    suffix = name[len("counting") :]
    if not name.startswith("counting") or (suffix and not suffix.isdigit()):
        raise ValueError(f"unknown counting task {name!r}; expected 'counting<target>', e.g. 'counting4'")
    target = task.get("target", int(suffix) if suffix else 4)
    if suffix and int(suffix) != target:
        raise ValueError(f"task name {name!r} disagrees with target={target}; set both or leave the name generic")
    kwargs = {k: task[k] for k in ("action_mode", "reward_type", "max_objects", "max_steps", "radius", "size", "renderer") if k in task}
    env = CountingEnv(target=target, batch_size=(num_envs,), seed=seed, device=device, **kwargs)
    return env if obs_type == "pixels" else as_state(env)
