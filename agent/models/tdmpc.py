"""The P-JEPA world model with TD-MPC2's heads: reward, Q ensemble (+ Polyak targets), termination,
policy prior. It implements the planner's protocol (:class:`planner.mppi.PlanningModel`).

No target *encoder*: only the Q ensemble has a slow copy, as in TD-MPC2.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.math import two_hot_inv
from agent.models.heads import QEnsemble, TanhGaussianPolicy
from agent.models.nets import mlp
from agent.models.world_model import WorldModel


class TDMPCModel(nn.Module):
    """Encoder/dynamics (P-JEPA) plus reward, termination, Q ensemble and policy prior.

    Args:
        wm: the P-JEPA world model (encoder and latent transition).
        mlp_dim: hidden width of the heads.
        num_q: Q ensemble size (TD-MPC2: 5).
        num_bins, vmin, vmax: two-hot bins over symlog space for reward and Q.
        dropout: dropout on the Q heads' first layer.
        episodic: add a termination head (otherwise ``termination`` is zero).
    """

    def __init__(
        self,
        wm: WorldModel,
        mlp_dim: int = 512,
        num_q: int = 5,
        num_bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        dropout: float = 0.01,
        episodic: bool = False,
    ) -> None:
        super().__init__()
        d, a = wm.latent_dim, wm.action_dim
        self.wm, self.action_dim = wm, a
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.reward_head = mlp(d + a, [mlp_dim, mlp_dim], num_bins)
        nn.init.zeros_(self.reward_head[-1].weight)
        nn.init.zeros_(self.reward_head[-1].bias)
        self.termination_head = mlp(d, [mlp_dim, mlp_dim], 1) if episodic else None
        self.qs = QEnsemble(d + a, mlp_dim, num_q, num_bins, dropout)
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)
        self.policy = TanhGaussianPolicy(d, mlp_dim, a)

    def train(self, mode: bool = True) -> TDMPCModel:
        """``nn.Module.train``, but the Polyak target ensemble always evaluates (no dropout in the TD
        targets), as TD-MPC2 keeps its target Qs in eval mode."""
        super().train(mode)
        self.target_qs.train(False)
        return self

    # --------------------------------------------------------------- world model
    def encode(self, obs: Tensor) -> Tensor:
        """``obs [..., *obs_shape] -> z [..., D]``."""
        return self.wm.encode(obs)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """``T(z, a)``: ``[..., D], [..., A] -> [..., D]``."""
        return self.wm.next(z, action)

    # --------------------------------------------------------------- heads
    def reward_logits(self, z: Tensor, action: Tensor) -> Tensor:
        """``[..., num_bins]`` logits of the reward of taking ``action`` in ``z``."""
        return self.reward_head(torch.cat([z, action], -1))

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """Predicted reward ``[..., 1]``."""
        return two_hot_inv(self.reward_logits(z, action), self.vmin, self.vmax)

    def termination_logit(self, z: Tensor) -> Tensor:
        """``[..., 1]`` logit that ``z`` is terminal (zeros when not episodic)."""
        if self.termination_head is None:
            return torch.full(z.shape[:-1] + (1,), -torch.inf, device=z.device, dtype=z.dtype)
        return self.termination_head(z)

    def termination(self, z: Tensor) -> Tensor:
        """Probability that ``z`` is terminal ``[..., 1]``."""
        return torch.sigmoid(self.termination_logit(z))

    def q_logits(self, z: Tensor, action: Tensor, target: bool = False, members: Tensor | None = None) -> Tensor:
        """Ensemble members' logits ``[num_q or len(members), ..., num_bins]`` (online or Polyak target)."""
        heads = self.target_qs if target else self.qs
        return heads(torch.cat([z, action], -1), members)

    def q_values(self, z: Tensor, action: Tensor, target: bool = False, members: Tensor | None = None) -> Tensor:
        """Members' values ``[num_q or len(members), ..., 1]``; only ``members`` are computed when given."""
        return two_hot_inv(self.q_logits(z, action, target, members), self.vmin, self.vmax)

    def Q(self, z: Tensor, action: Tensor, members: Tensor | None = None) -> Tensor:  # noqa: N802
        """Mean of two members' values ``[..., 1]`` (TD-MPC2's ``return_type='avg'``): ``members`` (from
        :meth:`value_members`), else a random pair from torch's generator."""
        return self.q_values(z, action, members=self.qs.random_pair() if members is None else members).mean(0)

    def value_members(self, generator: torch.Generator | None = None) -> Tensor:
        """Two distinct random Q members ``[2]`` (on the model's device), drawn with ``generator``."""
        return self.qs.random_pair(generator)

    def pi(self, z: Tensor, noise: Tensor | None = None) -> Tensor:
        """A policy-prior action sample ``[..., A]`` (for standard-normal ``noise [..., A]``, else fresh)."""
        return self.policy(z, noise=noise).action

    def bce_termination(self, z: Tensor, terminated: Tensor) -> Tensor:
        """Binary cross-entropy of the termination head (zero when not episodic): scalar."""
        if self.termination_head is None:
            return z.new_zeros(())
        return F.binary_cross_entropy_with_logits(self.termination_logit(z), terminated.to(z.dtype))
