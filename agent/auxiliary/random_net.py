"""A frozen, randomly initialised network of the observation as the auxiliary target (MSE)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agent.auxiliary.base import AuxTask
from agent.nets import PixelEncoder, StateEncoder, mlp


class RandomNetAux(AuxTask):
    """``p(o) = f_rand(o)``, ``f_rand`` a frozen random network (256-dim output by default).

    The network is initialised from its own ``seed`` (independent of the run seed) and stored as
    buffers-only parameters with ``requires_grad=False``, so it is saved with the checkpoint.

    Args:
        latent_dim, obs_shape: filled in by the agent.
        out_dim: size of the random target.
        seed: seed of the random network's initialisation.
        hidden_dim, num_layers: the head ``P``.
        num_channels: width of the random conv net for pixel observations.
    """

    name = "random"
    data_keys = ("obs",)

    def __init__(
        self,
        latent_dim: int,
        obs_shape: tuple[int, ...],
        out_dim: int = 256,
        seed: int = 0,
        hidden_dim: int = 256,
        num_layers: int = 2,
        num_channels: int = 32,
    ) -> None:
        super().__init__(latent_dim, obs_shape)
        self.out_dim = out_dim
        with torch.random.fork_rng(devices=[]):  # own seed; the global CPU RNG is restored after
            torch.manual_seed(seed)
            if len(obs_shape) == 3:
                net: nn.Module = PixelEncoder(tuple(obs_shape), num_channels, out_dim, shift_pad=0)
            else:
                net = StateEncoder(obs_shape[0], hidden_dim, out_dim)
        self.net = net.requires_grad_(False).eval()
        self.head = mlp(latent_dim, [hidden_dim] * num_layers, out_dim)

    def train(self, mode: bool = True) -> "RandomNetAux":
        super().train(mode)
        self.net.eval()  # the target never changes behaviour
        return self

    @torch.no_grad()
    def target(self, data: dict[str, Tensor]) -> Tensor:
        return self.net(data["obs"])

    def loss(self, z: Tensor, target: Tensor) -> Tensor:
        return (self.head(z) - target).pow(2).mean(-1)

    def config_signature(self) -> dict:
        return {"name": self.name, "out_dim": self.out_dim}
