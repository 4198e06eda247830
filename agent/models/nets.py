"""Network building blocks: TD-MPC2 MLP blocks, the state encoder, the latent's last activation.

Pixel encoders live in :mod:`agent.models.encoders`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.math import SimNorm


def _tanh_softplus(s: Tensor) -> Tensor:
    """``tanh(softplus(x))`` from ``s = sigmoid(x)``, as ``s (2 - s) / (1 + (1 - s)^2)``: no cancellation
    (``1 - u^2 = s (2 - s)`` for ``u = 1 - s``) and one new tensor (the rest in place)."""
    return torch.rsub(s, 2).mul_(s).div_(torch.rsub(s, 1).square_().add_(1))


class _EagerMish(torch.autograd.Function):
    """fp32 Mish with its derivative ``t + x s (1 - t^2)`` written out (``s = sigmoid(x)``,
    ``t = tanh(softplus(x))``; one new tensor): forward and backward ~2-3x faster than ``F.mish`` on an
    AVX2 CPU (docs/benchmarks.md), the gradient within 2e-6 of fp64's (``F.mish``: 1e-6; the exact
    ``1 - t^2 = 4 u^2 / (1 + u^2)^2``, ``u = 1 - s``, halved the speed-up). First derivatives only: a
    double backward (``create_graph=True``) raises instead of dropping terms."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        t = _tanh_softplus(s)
        ctx.save_for_backward(x, s, t)
        return x * t

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("mish has no double backward (create_graph=True); use torch.nn.functional.mish there")
        x, s, t = ctx.saved_tensors
        return t.square().neg_().add_(1).mul_(s).mul_(x).add_(t).mul_(grad)


def mish(x: Tensor) -> Tensor:
    """Mish, ``x * tanh(softplus(x))``, built on sigmoid: torch's CPU tanh and softplus kernels are
    several times slower than its sigmoid (docs/benchmarks.md). Any shape.

    - fp32 on a CPU in eager code: ``tanh(softplus(x)) = s (2 - s) / (1 + (1 - s)^2)`` with ``s = sigmoid(x)``
      (the same function: ``tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1)``), in place where
      nothing needs the intermediates, and with a written-out backward where a gradient is needed;
      within ~2e-6 of ``F.mish`` in value and gradient (tested).
    - compiled code: ``x (1 - u^2) / (1 + u^2)``, ``u = sigmoid(-x)``, evaluated in fp32 and rounded once
      (as ``F.mish`` does for the bf16 inputs CPU autocast's LayerNorm hands it); inductor fuses it,
      forward and backward, into one loop.
    - bf16 or off the CPU in eager code: ``F.mish`` itself (its internal fp32 needs no casts; on a GPU
      it is one kernel, where the forms above launch several).
    """
    if torch.compiler.is_compiling():
        xf = x.float()
        u2 = torch.sigmoid(-xf).square()
        return (xf * (1 - u2) / (1 + u2)).to(x.dtype)
    if x.dtype != torch.float32 or x.device.type != "cpu":  # a GPU runs F.mish as one kernel: fewer launches
        return F.mish(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _EagerMish.apply(x)
    return _tanh_softplus(torch.sigmoid(x)).mul_(x)


class Mish(nn.Module):
    """:func:`mish` as a module (no parameters: state dicts are those of ``nn.Mish`` stacks)."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


class Dropout(nn.Module):
    """``nn.Dropout`` (same maths, same distribution) that draws only the dropped positions on a CPU.

    Each element is zeroed independently with probability ``p`` and the rest scaled by ``1 / (1 - p)``,
    as ``F.dropout``; but the dropped positions are drawn as the gaps between them (i.i.d. geometric,
    ``P(gap = k) = (1 - p)^(k-1) p``: exactly a Bernoulli process), ~``p n`` random numbers instead of
    ``n``: for TD-MPC2's ``p = 0.01`` on the Q ensemble ~1 ms instead of ~11 ms (docs/benchmarks.md).
    Compiled CPU code draws the same positions through the opaque :func:`dropout_keep`. Off the CPU it is
    ``F.dropout`` (fast there). Draws from torch's global generator. Any shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        if torch.compiler.is_compiling():  # eager's maths: x / (1 - p) rounded once, zeros where dropped
            return torch.where(dropout_keep(x.detach(), self.p), x * (1.0 / (1.0 - self.p)), 0.0)
        y = (x * (1.0 / (1.0 - self.p))).contiguous()  # a fresh tensor: its flat view is filled in place
        y.view(-1).index_fill_(0, dropped_positions(x.numel(), self.p), 0.0)
        return y

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropped_positions(n: int, p: float) -> Tensor:
    """Sorted flat indices ``[k]`` of a Bernoulli(``p``) process over ``n`` elements, drawn as geometric gaps."""
    log_keep = math.log1p(-p)
    chunks, last = [torch.empty(0, dtype=torch.long)], -1
    while last < n - 1:
        m = int(n * p + 6 * math.sqrt(n * p) + 16)  # enough gaps to pass n, almost always in one draw
        gaps = torch.floor(torch.log(torch.rand(m, dtype=torch.float64)) / log_keep).long() + 1
        pos = last + torch.cumsum(gaps, 0)
        chunks.append(pos)
        last = int(pos[-1])
    pos = torch.cat(chunks)
    return pos[pos < n]


@torch.library.custom_op("jepa_mpc::dropout_keep", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def dropout_keep(x: Tensor, p: float) -> Tensor:
    """Which elements :class:`Dropout` keeps: a bool tensor of ``x``'s shape (``x`` is read for its shape and
    device only; pass it detached), False at :func:`dropped_positions`. A custom op, so that compiled code
    runs it as it is; tagged as a seeded random op, so inductor keeps it in program order among the other
    draws (with ``fallback_random``) and never merges two calls."""
    keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    keep.view(-1).index_fill_(0, dropped_positions(x.numel(), p).to(x.device), False)
    return keep


@dropout_keep.register_fake
def _dropout_keep_fake(x: Tensor, p: float) -> Tensor:
    return torch.empty(x.shape, dtype=torch.bool, device=x.device)


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
