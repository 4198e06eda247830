"""Network building blocks: TD-MPC2 MLP blocks, the state encoder, the latent's last activation.

Pixel encoders live in :mod:`agent.models.encoders`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.math import SimNorm


def mish(x: Tensor) -> Tensor:
    """Mish, ``x * tanh(softplus(x))``; without a gradient, as ``x * (1 - u^2) / (1 + u^2)`` with ``u = sigmoid(-x)``.

    The same function (``tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1)``), within 1e-6 of
    ``F.mish`` (tested), built on sigmoid because torch's CPU tanh and softplus kernels are several
    times slower than its sigmoid: ~2.7x faster than ``F.mish`` in eager inference (planning), and one
    fused loop, forward and backward, in compiled code (docs/benchmarks.md). Evaluated in fp32 and
    rounded once, as ``F.mish`` does for the bf16 inputs CPU autocast's LayerNorm hands it. Eager code
    that needs a gradient, or has a bf16 input, uses ``F.mish`` itself: its fused backward beats the
    decomposed one, and it needs no casts. Any shape.
    """
    if not torch.compiler.is_compiling() and (x.dtype != torch.float32 or (x.requires_grad and torch.is_grad_enabled())):
        return F.mish(x)
    xf = x.float()
    u2 = torch.sigmoid(-xf).square()
    return (xf * (1 - u2) / (1 + u2)).to(x.dtype)


class Mish(nn.Module):
    """:func:`mish` as a module (no parameters: state dicts are those of ``nn.Mish`` stacks)."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


def mlp(in_dim: int, hidden: list[int], out_dim: int, out_act: nn.Module | None = None) -> nn.Sequential:
    """TD-MPC2 block stack: (Linear -> LayerNorm -> Mish) per hidden layer, then Linear [-> out_act]."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), Mish()]
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
