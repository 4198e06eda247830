"""Network building blocks: TD-MPC2 MLP blocks, the conv pixel encoder, random-shift augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class ShiftAug(nn.Module):
    """Random shift augmentation (pad by ``pad`` with edge values, random crop back), training only."""

    def __init__(self, pad: int = 3) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, C, H, W]`` float -> same shape, each image shifted by up to ``pad`` pixels."""
        if not self.training or self.pad == 0:
            return x
        n, _, h, w = x.shape
        x = F.pad(x, (self.pad,) * 4, mode="replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device, dtype=x.dtype)[:h]
        base = torch.stack(torch.meshgrid(arange, arange, indexing="xy"), -1)  # [h, w, 2]
        shift = torch.randint(0, 2 * self.pad + 1, (n, 1, 1, 2), device=x.device).to(x.dtype) * 2.0 * eps
        return F.grid_sample(x, base[None] + shift, padding_mode="zeros", align_corners=False)


class PixelEncoder(nn.Module):
    """TD-MPC2 conv encoder for uint8 frames: scale to [-0.5, 0.5], convs 7s2 5s2 3s2 3s1, linear head.

    Convs are He-initialised (fan-in, ReLU gain) with zero bias. PyTorch's default conv init
    shrinks the signal ~2x per layer; on counting frames (a few small objects on black) the
    latent then varies by ~0.2% across images and neither the aux loss nor supervised counting
    learns in thousands of steps (measured; see docs/results.md).

    ``[N, C, H, W]`` uint8 -> ``[N, latent_dim]``.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_channels: int, latent_dim: int, shift_pad: int = 3) -> None:
        super().__init__()
        c = obs_shape[0]
        self.aug = ShiftAug(shift_pad)
        self.convs = nn.Sequential(
            nn.Conv2d(c, num_channels, 7, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 5, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(num_channels, num_channels, 3, stride=1), nn.Flatten(),
        )  # fmt: skip
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[-1]
        self.head = nn.Linear(flat, latent_dim)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.float() / 255.0 - 0.5
        return self.head(self.convs(self.aug(x)))


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
