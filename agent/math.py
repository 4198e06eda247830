"""Pure maths helpers: symlog, two-hot encoding over symlog bins, soft cross-entropy, SimNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def symlog(x: Tensor) -> Tensor:
    """sign(x) * log(1 + |x|)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """Inverse of symlog."""
    return torch.sign(x) * torch.expm1(x.abs())


def bin_centers(num_bins: int, vmin: float, vmax: float, device: torch.device | str | None = None) -> Tensor:
    """Evenly spaced bin centres in symlog space: ``[num_bins]``."""
    return torch.linspace(vmin, vmax, num_bins, device=device)


def two_hot(x: Tensor, num_bins: int, vmin: float, vmax: float) -> Tensor:
    """Two-hot encoding of scalars in symlog space.

    Args:
        x: ``[..., 1]`` real values.
    Returns:
        ``[..., num_bins]`` weights summing to 1 on the two bins around ``symlog(x)``; all NaN
        where ``x`` is NaN (so a loss built on it is NaN, not an indexing error).
    """
    if x.shape[-1] != 1:
        raise ValueError(f"two_hot expects a trailing dimension of size 1, got shape {tuple(x.shape)}")
    width = (vmax - vmin) / (num_bins - 1)
    nan = torch.isnan(x)
    pos = (symlog(x.nan_to_num(0.0)).clamp(vmin, vmax) - vmin) / width
    low = pos.floor().clamp(0, num_bins - 1)
    frac = pos - low
    high = (low + 1).clamp(max=num_bins - 1)
    out = torch.zeros(*x.shape[:-1], num_bins, device=x.device, dtype=x.dtype)
    out.scatter_add_(-1, low.long(), 1 - frac)
    out.scatter_add_(-1, high.long(), frac)
    return out.masked_fill(nan, float("nan"))


def two_hot_inv(logits: Tensor, vmin: float, vmax: float) -> Tensor:
    """Expected value of a categorical over symlog bins, mapped back: ``[..., B] -> [..., 1]``."""
    centers = bin_centers(logits.shape[-1], vmin, vmax, logits.device)  # fp32 even under bf16 autocast
    return symexp((F.softmax(logits.float(), -1) * centers).sum(-1, keepdim=True))


def soft_ce(logits: Tensor, x: Tensor, num_bins: int, vmin: float, vmax: float) -> Tensor:
    """Cross-entropy of ``logits [..., B]`` against the two-hot of ``x [..., 1]``: ``[..., 1]``."""
    target = two_hot(x, num_bins, vmin, vmax)
    return -(target * F.log_softmax(logits, -1)).sum(-1, keepdim=True)


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``dim`` features."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.dim:
            raise ValueError(f"SimNorm group size {self.dim} does not divide latent size {x.shape[-1]}")
        shape = x.shape
        return F.softmax(x.view(*shape[:-1], -1, self.dim), -1).view(shape)
