"""Reward of the current observation as the auxiliary target, two-hot soft cross-entropy (TD-MPC2)."""

from __future__ import annotations

import torch
from torch import Tensor

from agent.auxiliary.base import AuxTask
from agent.math import soft_ce, two_hot_inv
from agent.models.nets import mlp


class RewardAux(AuxTask):
    """``p(o) = r(o)``: the reward of the observation itself (``obs_reward``, pre-action).

    The counting env computes it from the frame; control envs give the reward received on
    arriving at the observation (:class:`envs.control.ArrivalReward`).

    Args:
        latent_dim, obs_shape: filled in by the agent.
        hidden_dim: width of the head's hidden layers.
        num_layers: hidden layers of the head.
        num_bins, vmin, vmax: two-hot bins over symlog space.
        zero_init: zero-initialise the last layer (TD-MPC2's reward head).
    """

    name = "reward"
    data_keys = ("obs_reward",)

    def __init__(
        self,
        latent_dim: int,
        obs_shape: tuple[int, ...],
        hidden_dim: int = 256,
        num_layers: int = 2,
        num_bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__(latent_dim, obs_shape)
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.head = mlp(latent_dim, [hidden_dim] * num_layers, num_bins)
        if zero_init:
            torch.nn.init.zeros_(self.head[-1].weight)
            torch.nn.init.zeros_(self.head[-1].bias)

    def target(self, data: dict[str, Tensor]) -> Tensor:
        return data["obs_reward"].float().reshape(-1, 1)

    def loss(self, z: Tensor, target: Tensor) -> Tensor:
        return soft_ce(self.head(z), target, self.num_bins, self.vmin, self.vmax).squeeze(-1)

    def predict(self, z: Tensor) -> Tensor:
        """Predicted reward ``[N, 1]``."""
        return two_hot_inv(self.head(z), self.vmin, self.vmax)

    def config_signature(self) -> dict:
        return {"name": self.name, "num_bins": self.num_bins}
