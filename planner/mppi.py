"""MPPI in latent space, as TD-MPC2 plans, batched over environments.

The planner needs only a small world-model protocol (:class:`PlanningModel`); it imports no env
and no agent class. Tensors are time-major: action sequences are ``[H, N, S, A]`` for horizon H,
N environments and S sampled sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor


class PlanningModel(Protocol):
    """What the planner calls. All methods act on leading batch dims ``[...]``; the planner draws all the
    randomness itself (one generator), so every verb is a pure function of its tensors."""

    action_dim: int

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """``z [..., D], action [..., A] -> z' [..., D]``."""

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """Predicted reward ``[..., 1]`` (a scalar value, not logits)."""

    def Q(self, z: Tensor, action: Tensor, members: Tensor) -> Tensor:  # noqa: N802
        """Value estimate ``[..., 1]`` of the value-ensemble ``members`` (from :meth:`value_members`)."""

    def value_members(self, generator: torch.Generator) -> Tensor:
        """Which members one value estimate averages, drawn with ``generator``: indices ``[M]`` (TD-MPC2: 2 random)."""

    def pi(self, z: Tensor, noise: Tensor) -> Tensor:
        """Policy-prior action ``[..., A]`` in [-1, 1] for standard-normal ``noise [..., A]``."""

    def termination(self, z: Tensor) -> Tensor:
        """Probability that ``z`` is terminal ``[..., 1]`` (zeros for non-episodic tasks)."""


class Refit(NamedTuple):
    """One MPPI iteration: the refit sampling distribution, the elites and their weights, every sequence's value."""

    mean: Tensor  # [H, N, A]
    std: Tensor  # [H, N, A]
    elites: Tensor  # [H, N, E, A]
    score: Tensor  # [N, E] softmax weights of the elites
    value: Tensor  # [N, S]


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
        seed: seed of the planner's own generator (sampling noise, the policy prior's noise, the value
            members and the final elite draw).
        compile: a compiler (``torch.compile``, or one with a mode) to run the policy prior's rollout
            (:meth:`policy_actions`) and each MPPI iteration (:meth:`iterate`: sampling, the rollout of all
            sequences, their values, the elites and the refit) as one graph each; every random number is
            drawn before, in eager code, so neither graph breaks and both give the eager numbers up to kernel
            rounding. They compile at the first plan per batch shape. Outputs are held across calls (the prior's
            actions, the refit fed to the next iteration), so under CUDA graphs the compiler must clone them, as
            :func:`agent.agents.compiled.compiled` does. ``None``: eager.
    """

    def __init__(self, model: PlanningModel, cfg: MPPIConfig, seed: int = 0, compile: Callable[[Callable], Callable] | None = None) -> None:
        self.model, self.cfg, self.seed = model, cfg, seed
        self._gen: torch.Generator | None = None  # all of the planner's randomness
        self._prev_mean: Tensor | None = None  # [H, N, A]
        # unbound, called with the planner: a deep copy runs them on itself, not on the original
        self._iterate, self._policy_actions = type(self).iterate, type(self).policy_actions
        if compile is not None:
            self._iterate, self._policy_actions = compile(self._iterate), compile(self._policy_actions)

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
    def estimate_value(self, z: Tensor, actions: Tensor, noise: Tensor, members: Tensor) -> Tensor:
        """Discounted predicted rewards plus the terminal Q: ``z [N, S, D], actions [H, N, S, A] -> [N, S]``.

        The terminal Q is of the policy prior's action for standard-normal ``noise [N, S, A]``, averaged
        over the value ensemble's ``members`` (:meth:`PlanningModel.value_members`). As TD-MPC2, a
        trajectory ends at the first latent whose termination probability exceeds 0.5: no reward after it
        and no terminal Q.
        """
        value = torch.zeros(z.shape[:-1] + (1,), device=z.device, dtype=z.dtype)
        discount = torch.ones_like(value)  # gamma^t, zero once a latent was predicted terminal
        for t in range(actions.shape[0]):
            value = value + discount * self.model.reward(z, actions[t])
            z = self.model.next(z, actions[t])
            discount = discount * self.cfg.gamma * (self.model.termination(z) <= 0.5).to(value.dtype)
        value = value + discount * self.model.Q(z, self.model.pi(z, noise), members)
        return value.squeeze(-1)

    @torch.no_grad()
    def policy_actions(self, z: Tensor, noise: Tensor) -> Tensor:
        """The policy prior's action sequences from ``z [N, P, D]`` for standard-normal ``noise [H, N, P, A]``:
        ``[H, N, P, A]`` in ``z``'s dtype."""
        out, dtype = [], z.dtype
        for t in range(noise.shape[0]):
            out.append(self.model.pi(z, noise[t]).to(dtype))
            if t < noise.shape[0] - 1:
                z = self.model.next(z, out[-1])
        return torch.stack(out)

    @torch.no_grad()
    def iterate(
        self, z: Tensor, pi_actions: Tensor, mean: Tensor, std: Tensor, noise: Tensor, value_noise: Tensor, members: Tensor
    ) -> Refit:
        """One MPPI iteration: sample sequences around ``mean, std [H, N, A]`` with standard-normal ``noise
        [H, N, S - P, A]``, put the policy prior's ``pi_actions [H, N, P, A]`` first, value all ``S`` from
        ``z [N, S, D]`` (:meth:`estimate_value` with ``value_noise``, ``members``), refit to the elites."""
        c = self.cfg
        sampled = (mean[:, :, None] + std[:, :, None] * noise).clamp(-1, 1)
        actions = torch.cat([pi_actions, sampled], 2)  # [H, N, S, A]
        value = self.estimate_value(z, actions, value_noise, members).nan_to_num(nan=-float("inf"))  # [N, S]
        elite_value, elite_idx = value.topk(c.num_elites, dim=1)  # [N, E]
        elites = torch.gather(actions, 2, elite_idx[None, :, :, None].expand(*actions.shape[:2], c.num_elites, actions.shape[-1]))
        score = torch.softmax(c.temperature * elite_value, dim=1)  # [N, E]
        w = score[None, :, :, None]
        mean = (w * elites).sum(2)
        std = ((w * (elites - mean[:, :, None]) ** 2).sum(2)).sqrt().clamp(c.min_std, c.max_std)
        return Refit(mean, std, elites, score, value)

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
        n, a_dim, h, p = z.shape[0], self.model.action_dim, c.horizon, c.num_pi_trajs
        gen = self._generator(dev)

        def normal(*shape: int) -> Tensor:
            return torch.randn(shape, device=dev, dtype=z.dtype, generator=gen)

        pi_actions = torch.empty(h, n, 0, a_dim, device=dev, dtype=z.dtype)
        if p:
            pi_noise = torch.stack([normal(n, p, a_dim) for _ in range(h)])  # step by step, as the prior draws
            pi_actions = self._policy_actions(self, z[:, None].expand(n, p, z.shape[-1]), pi_noise)
        mean = torch.zeros(h, n, a_dim, device=dev, dtype=z.dtype)
        if self._prev_mean is not None and self._prev_mean.shape == mean.shape:
            mean[:-1] = self._prev_mean[1:]  # warm start: shift by one step
        std = torch.full_like(mean, c.max_std)
        zs = z[:, None].expand(n, c.num_samples, z.shape[-1])
        for _ in range(c.iterations):
            noise, value_noise = normal(h, n, c.num_samples - p, a_dim), normal(n, c.num_samples, a_dim)
            members = self.model.value_members(gen)
            mean, std, elites, score, _ = self._iterate(self, zs, pi_actions, mean, std, noise, value_noise, members)
        # one elite per env, by score; NaN scores (weights a non-finite update left, not yet read back on a GPU)
        # draw uniformly instead of ending the CUDA context with a device-side assert: the run stops before acting
        pick = torch.multinomial(score.nan_to_num(1.0), 1, generator=gen).squeeze(1)
        chosen = elites[:, torch.arange(n, device=dev), pick]  # [H, N, A]
        action, action_std = chosen[0], std[0]
        if not eval_mode:
            action = action + action_std * torch.randn(action.shape, device=dev, dtype=z.dtype, generator=gen)
        self._prev_mean = mean
        return action.clamp(-1, 1)
