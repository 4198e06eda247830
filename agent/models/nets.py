"""Network building blocks: TD-MPC2 MLP blocks, the state encoder, the latent's last activation.

Pixel encoders live in :mod:`agent.models.encoders`.
"""

from __future__ import annotations

from torch import Tensor, nn

from agent.math import SimNorm


def mlp(in_dim: int, hidden: list[int], out_dim: int, out_act: nn.Module | None = None) -> nn.Sequential:
    """TD-MPC2 block stack: (Linear -> LayerNorm -> Mish) per hidden layer, then Linear [-> out_act]."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.Mish()]
    layers.append(nn.Linear(dims[-1], out_dim))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class StateEncoder(nn.Module):
    """MLP encoder for state vectors: ``[N, obs_dim] -> [N, latent_dim]``."""

    def __init__(self, obs_dim: int, enc_dim: int, latent_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.net = mlp(obs_dim, [enc_dim] * (num_layers - 1), latent_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float())


def latent_out(simnorm: bool, simnorm_dim: int) -> nn.Module:
    """The latent's last activation: SimNorm when enabled, identity otherwise."""
    return SimNorm(simnorm_dim) if simnorm else nn.Identity()
