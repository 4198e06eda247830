"""A frozen, randomly initialised network of the observation as the auxiliary target (MSE)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agent.auxiliary.base import AuxTask
from agent.models.encoders import PixelEncoder, scale_frames
from agent.models.nets import StateEncoder, mlp

RANDOM_NETS = ("conv", "linear")


class RandomLinear(nn.Module):
    """A linear map of the flattened observation (pixels scaled to [-0.5, 0.5]): ``[N, *obs_shape] -> [N, out_dim]``."""

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.pixels = len(obs_shape) == 3
        self.linear = nn.Linear(int(torch.tensor(obs_shape).prod()), out_dim)

    def forward(self, obs: Tensor) -> Tensor:
        x = scale_frames(obs) if self.pixels else obs.float()
        return self.linear(x.flatten(1))


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
        net: ``conv`` (a frozen random conv encoder of the frame) or ``linear`` (a frozen random
            linear map of the raw pixels scaled to [-0.5, 0.5], the reference code's target).
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
        net: str = "conv",
    ) -> None:
        super().__init__(latent_dim, obs_shape)
        if net not in RANDOM_NETS:
            raise ValueError(f"unknown aux.net {net!r}; expected one of {RANDOM_NETS}")
        self.out_dim = out_dim
        with torch.random.fork_rng(devices=[]):  # own seed; the global CPU RNG is restored after
            torch.manual_seed(seed)
            if net == "linear":
                target_net: nn.Module = RandomLinear(tuple(obs_shape), out_dim)
            elif len(obs_shape) == 3:
                target_net = PixelEncoder(tuple(obs_shape), num_channels, out_dim, shift_pad=0)
            else:
                target_net = StateEncoder(obs_shape[0], hidden_dim, out_dim)
        self.net = target_net.requires_grad_(False).eval()
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
