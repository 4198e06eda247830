"""MPPI in latent space, as TD-MPC2 plans, batched over environments.

The planner needs only a small world-model protocol (:class:`PlanningModel`); it imports no env
and no agent class. Tensors are time-major: action sequences are ``[H, N, S, A]`` for horizon H,
N environments and S sampled sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class PlanningModel(Protocol):
    """What the planner calls. All methods act on leading batch dims ``[...]``."""

    action_dim: int

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """``z [..., D], action [..., A] -> z' [..., D]``."""

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """Predicted reward ``[..., 1]`` (a scalar value, not logits)."""

    def Q(self, z: Tensor, action: Tensor, generator: torch.Generator | None = None) -> Tensor:  # noqa: N802
        """Value estimate ``[..., 1]`` (e.g. the mean of the Q ensemble); randomness from ``generator``."""

    def pi(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Policy-prior action sample ``[..., A]`` in [-1, 1]; randomness from ``generator``."""

    def termination(self, z: Tensor) -> Tensor:
        """Probability that ``z`` is terminal ``[..., 1]`` (zeros for non-episodic tasks)."""


@dataclass
class MPPIConfig:
    """TD-MPC2's planner settings (defaults from its config).

    Attributes:
        horizon: planning horizon H.
        iterations: MPPI refinement iterations.
        num_samples: action sequences per iteration, including the policy-prior ones.
        num_elites: top sequences kept to refit the sampling distribution.
        num_pi_trajs: sequences rolled out with the policy prior (0 disables).
        temperature: softmax temperature of the elite weights.
        min_std, max_std: bounds of the sampling std (max_std is also the initial std).
        gamma: discount of predicted rewards.
    """

    horizon: int = 3
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    temperature: float = 0.5
    min_std: float = 0.05
    max_std: float = 2.0
    gamma: float = 0.99

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.iterations < 1:
            raise ValueError(f"horizon and iterations must be >= 1, got {self.horizon}, {self.iterations}")
        if not 0 <= self.num_pi_trajs < self.num_samples:
            raise ValueError(f"num_pi_trajs must be in [0, num_samples), got {self.num_pi_trajs} of {self.num_samples}")
        if not 1 <= self.num_elites <= self.num_samples:
            raise ValueError(f"num_elites must be in [1, num_samples], got {self.num_elites}")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}")


class MPPI:
    """Model-predictive path integral planner with a warm start from the shifted previous mean.

    Args:
        model: anything with the :class:`PlanningModel` verbs.
        cfg: planner settings.
        seed: seed of the planner's own generator (sampling noise and the final elite draw).
        compile: a compiler (``torch.compile``, or one with a mode) to run :meth:`estimate_value` (the rollout
            of all sequences through the model's verbs and the terminal value, per iteration) as one graph;
            the same maths and random draws up to kernel rounding. It compiles at the first plan per batch
            shape. ``None``: eager.
    """

    def __init__(self, model: PlanningModel, cfg: MPPIConfig, seed: int = 0, compile: Callable[[Callable], Callable] | None = None) -> None:
        self.model, self.cfg, self.seed = model, cfg, seed
        self._gen: torch.Generator | None = None  # all of the planner's randomness, model calls included
        self._prev_mean: Tensor | None = None  # [H, N, A]
        # unbound, called with the planner: a deep copy runs it on itself, not on the original
        self._value = type(self).estimate_value if compile is None else compile(type(self).estimate_value)

    def reset(self, mask: Tensor | None = None) -> None:
        """Forget the warm start (for envs where ``mask [N]`` is True, or all)."""
        if mask is None or self._prev_mean is None:
            self._prev_mean = None
        else:
            self._prev_mean[:, mask.to(self._prev_mean.device)] = 0.0

    def state_dict(self) -> dict:
        """The planner's state (warm start and generator) as tensors, for exact resume."""
        return {
            "prev_mean": None if self._prev_mean is None else self._prev_mean.cpu(),
            "gen": None if self._gen is None else self._gen.get_state(),
            "gen_device": None if self._gen is None else str(self._gen.device),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the warm start goes to the generator's device)."""
        self._gen = None
        if state["gen"] is not None:
            self._gen = torch.Generator(device=state["gen_device"])
            self._gen.set_state(state["gen"])
        prev = state["prev_mean"]
        self._prev_mean = None if prev is None else prev.to(self._gen.device if self._gen is not None else "cpu")

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen

    @torch.no_grad()
    def estimate_value(self, z: Tensor, actions: Tensor) -> Tensor:
        """Discounted predicted rewards plus the terminal Q: ``z [N, S, D], actions [H, N, S, A] -> [N, S]``.

        As TD-MPC2, a trajectory ends at the first latent whose termination probability exceeds 0.5:
        no reward after it and no terminal Q.
        """
        value = torch.zeros(z.shape[:-1] + (1,), device=z.device, dtype=z.dtype)
        discount = torch.ones_like(value)  # gamma^t, zero once a latent was predicted terminal
        for t in range(actions.shape[0]):
            value = value + discount * self.model.reward(z, actions[t])
            z = self.model.next(z, actions[t])
            discount = discount * self.cfg.gamma * (self.model.termination(z) <= 0.5).to(value.dtype)
        gen = self._generator(z.device)
        value = value + discount * self.model.Q(z, self.model.pi(z, generator=gen), generator=gen)
        return value.squeeze(-1)

    @torch.no_grad()
    def plan(self, z: Tensor, eval_mode: bool = False) -> Tensor:
        """First action of the planned sequence for each env.

        Args:
            z: latent states ``[N, D]``.
            eval_mode: no exploration noise on the returned action.
        Returns:
            actions ``[N, A]`` in [-1, 1].
        """
        c, dev = self.cfg, z.device
        n, a_dim, h = z.shape[0], self.model.action_dim, c.horizon
        gen = self._generator(dev)
        actions = torch.empty(h, n, c.num_samples, a_dim, device=dev, dtype=z.dtype)
        if c.num_pi_trajs:
            zp = z[:, None].expand(n, c.num_pi_trajs, z.shape[-1])
            for t in range(h):
                actions[t, :, : c.num_pi_trajs] = self.model.pi(zp, generator=gen)
                if t < h - 1:
                    zp = self.model.next(zp, actions[t, :, : c.num_pi_trajs])
        mean = torch.zeros(h, n, a_dim, device=dev, dtype=z.dtype)
        if self._prev_mean is not None and self._prev_mean.shape == mean.shape:
            mean[:-1] = self._prev_mean[1:]  # warm start: shift by one step
        std = torch.full_like(mean, c.max_std)
        zs = z[:, None].expand(n, c.num_samples, z.shape[-1])
        n_rand = c.num_samples - c.num_pi_trajs
        for _ in range(c.iterations):
            noise = torch.randn(h, n, n_rand, a_dim, device=dev, dtype=z.dtype, generator=gen)
            actions[:, :, c.num_pi_trajs :] = (mean[:, :, None] + std[:, :, None] * noise).clamp(-1, 1)
            value = self._value(self, zs, actions).nan_to_num(nan=-float("inf"))  # [N, S]
            elite_value, elite_idx = value.topk(c.num_elites, dim=1)  # [N, E]
            elites = torch.gather(actions, 2, elite_idx[None, :, :, None].expand(h, n, c.num_elites, a_dim))
            score = torch.softmax(c.temperature * elite_value, dim=1)  # [N, E]
            w = score[None, :, :, None]
            mean = (w * elites).sum(2)
            std = ((w * (elites - mean[:, :, None]) ** 2).sum(2)).sqrt().clamp(c.min_std, c.max_std)
        pick = torch.multinomial(score, 1, generator=gen).squeeze(1)  # one elite per env, by score
        chosen = elites[:, torch.arange(n, device=dev), pick]  # [H, N, A]
        action, action_std = chosen[0], std[0]
        if not eval_mode:
            action = action + action_std * torch.randn(action.shape, device=dev, dtype=z.dtype, generator=gen)
        self._prev_mean = mean
        return action.clamp(-1, 1)
