"""TD-MPC2's heads on top of the P-JEPA latent: Q ensemble, policy prior, and their maths.

Reward and termination heads are plain :func:`agent.nets.mlp` stacks (built by the agent); this
module holds what needs more than that: an ensemble evaluated as one batched op, the tanh-Gaussian
prior, the TD target, Polyak averaging, the running Q scale and the episode-length discount.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.models.nets import Dropout, Mish, mish, mlp


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied in one batched matmul: ``[E, N, in] -> [E, N, out]``."""

    def __init__(self, num: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(num, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine per ensemble member: ``[E, N, D]``."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, dim))

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        w, b = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return F.layer_norm(x, x.shape[-1:]) * w + b


class QEnsemble(nn.Module):
    """``num_q`` Q-functions, each (Linear -> Dropout -> LN -> Mish) -> (Linear -> LN -> Mish) -> Linear.

    ``x [..., in_dim]`` (latent and action concatenated) -> logits ``[num_q, ..., num_bins]``, or
    ``[len(members), ..., num_bins]`` for a subset of members (only those are computed). The last
    layer is zero-initialised and dropout acts on the first layer (TD-MPC2).
    """

    def __init__(self, in_dim: int, hidden: int, num_q: int = 5, num_bins: int = 101, dropout: float = 0.01) -> None:
        super().__init__()
        if num_q < 2:
            raise ValueError(f"the TD target takes the min of 2 Qs: num_q must be >= 2, got {num_q}")
        self.num_q = num_q
        self.l1, self.n1 = EnsembleLinear(num_q, in_dim, hidden), EnsembleLayerNorm(num_q, hidden)
        self.l2, self.n2 = EnsembleLinear(num_q, hidden, hidden), EnsembleLayerNorm(num_q, hidden)
        self.out = EnsembleLinear(num_q, hidden, num_bins)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        lead = x.shape[:-1]
        num = self.num_q if members is None else members.shape[0]
        h = x.reshape(1, -1, x.shape[-1]).expand(num, -1, -1)
        h = mish(self.n1(self.drop(self.l1(h, members)), members))
        h = mish(self.n2(self.l2(h, members), members))
        return self.out(h, members).reshape(num, *lead, -1)

    def random_pair(self, generator: torch.Generator | None = None) -> Tensor:
        """Indices of 2 distinct random members (TD-MPC2 evaluates 2 of the ensemble): ``[2]``."""
        dev = generator.device if generator is not None else self.l1.weight.device  # no host sync
        return torch.randperm(self.num_q, generator=generator, device=dev)[:2].to(self.l1.weight.device)

    def member(self, i: int) -> nn.Sequential:
        """Member ``i`` as a plain module stack (a copy; for checks and inspection)."""

        def linear(layer: EnsembleLinear) -> nn.Linear:
            lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
            lin.weight.data.copy_(layer.weight[i].T)
            lin.bias.data.copy_(layer.bias[i, 0])
            return lin

        def norm(layer: EnsembleLayerNorm) -> nn.LayerNorm:
            ln = nn.LayerNorm(layer.weight.shape[-1])
            ln.weight.data.copy_(layer.weight[i, 0])
            ln.bias.data.copy_(layer.bias[i, 0])
            return ln

        return nn.Sequential(
            linear(self.l1), nn.Dropout(self.drop.p), norm(self.n1), Mish(),
            linear(self.l2), norm(self.n2), Mish(), linear(self.out),
        )  # fmt: skip


class PolicySample(NamedTuple):
    """One draw of the policy prior (shapes for ``z [..., D]`` and ``A`` action dims)."""

    action: Tensor  # [..., A] tanh-squashed sample in (-1, 1)
    log_prob: Tensor  # [..., 1] log-density of ``action`` (tanh-corrected)
    mean: Tensor  # [..., A] tanh of the Gaussian mean (the deterministic action)
    gaussian_log_prob: Tensor  # [..., 1] log-density of the pre-squash Gaussian sample


class TanhGaussianPolicy(nn.Module):
    """Policy prior: ``z -> tanh(mean + std * eps)`` with ``log_std`` squashed into [min, max].

    ``forward(z [..., D])`` returns a :class:`PolicySample`.
    """

    def __init__(self, latent_dim: int, hidden: int, action_dim: int, log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = mlp(latent_dim, [hidden, hidden], 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, z: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None) -> PolicySample:
        """The sample for standard-normal ``noise [..., A]`` when given (in the net's dtype), else drawn with ``generator``."""
        mean, raw = self.net(z).chunk(2, -1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1)
        if noise is None:
            eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        else:
            eps = noise.to(mean.dtype)
        pre = mean + eps * log_std.exp()
        gauss = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
        action = torch.tanh(pre)
        log_prob = gauss - torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
        return PolicySample(action, log_prob, torch.tanh(mean), gauss)


def td_target(reward: Tensor, next_q: Tensor, terminated: Tensor, discount: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``r + discount * (1 - terminated) * min(Q_i, Q_j)`` over 2 random members of ``next_q [E, ..., 1]``."""
    if next_q.shape[0] > 2:
        next_q = next_q[torch.randperm(next_q.shape[0], generator=generator)[:2].to(next_q.device)]
    return reward + discount * (1 - terminated.to(reward.dtype)) * next_q.min(0).values


@torch.no_grad()
def polyak(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * online``, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


def discount_from_episode_length(length: int, lo: float = 0.95, hi: float = 0.995) -> float:
    """TD-MPC2's heuristic: ``frac = length / 5``, ``gamma = (frac - 1) / frac`` clipped to [lo, hi]."""
    frac = length / 5
    return float(min(max((frac - 1) / frac, lo), hi))


class RunningScale(nn.Module):
    """Running 5-95 percentile range of Q values (each range clamped to >= 1), to scale the policy loss."""

    def __init__(self, tau: float = 0.01) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(()))
        # on the module's device, so a GPU update never copies them from the host (a copy that waits for the device)
        self.register_buffer("percentiles", torch.tensor([0.05, 0.95], dtype=torch.float32), persistent=False)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        q = torch.quantile(x.detach().float().flatten(), self.percentiles)
        self.value.lerp_((q[1] - q[0]).clamp_min(1.0).to(self.value.dtype), self.tau)  # as TD-MPC2: never below 1

    def forward(self, x: Tensor) -> Tensor:
        return x / self.value.clamp_min(1e-6)
