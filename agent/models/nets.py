"""Network building blocks: TD-MPC2 MLP blocks, the state encoder, the latent's last activation.

Pixel encoders live in :mod:`agent.models.encoders`.
"""

from __future__ import annotations

import math

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


class Dropout(nn.Module):
    """``nn.Dropout`` (same maths, same distribution) that draws only the dropped positions on a CPU.

    Each element is zeroed independently with probability ``p`` and the rest scaled by ``1 / (1 - p)``,
    as ``F.dropout``; but the dropped positions are drawn as the gaps between them (i.i.d. geometric,
    ``P(gap = k) = (1 - p)^(k-1) p``: exactly a Bernoulli process), ~``p n`` random numbers instead of
    ``n``. For TD-MPC2's ``p = 0.01`` on the Q ensemble's ``[5, 768, 512]`` activations that is ~1 ms
    instead of ~11 ms of CPU Bernoulli sampling (docs/benchmarks.md). Off the CPU and in compiled code
    it is ``F.dropout`` (fast there). Draws from torch's global generator. Any shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True)
        y = (x * (1.0 / (1.0 - self.p))).contiguous()  # a fresh tensor: its flat view is filled in place
        y.view(-1).index_fill_(0, dropped_positions(x.numel(), self.p), 0.0)
        return y

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropped_positions(n: int, p: float) -> Tensor:
    """Sorted flat indices ``[k]`` of a Bernoulli(``p``) process over ``n`` elements, drawn as geometric gaps."""
    log_keep = math.log1p(-p)
    chunks, last = [], -1
    while last < n - 1:
        m = int(n * p + 6 * math.sqrt(n * p) + 16)  # enough gaps to pass n, almost always in one draw
        gaps = torch.floor(torch.log(torch.rand(m, dtype=torch.float64)) / log_keep).long() + 1
        pos = last + torch.cumsum(gaps, 0)
        chunks.append(pos)
        last = int(pos[-1])
    pos = torch.cat(chunks)
    return pos[pos < n]


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
