"""Pixel encoders for uint8 frames, chosen by ``model.pixel_encoder``.

``flatten``  TD-MPC2's conv encoder: convs 7s2 5s2 3s2 3s1 (no padding), flatten, linear.
``pooled``   the same convs padded ("same"-style), ReLU, global average pooling, linear: cheap on a
             CPU and counting-friendly (a per-location object detector averaged over the frame is
             proportional to the count).
``resnet``   the paper's reference encoder: stem (7x7 s2 conv, ReLU, 3x3 s2 max-pool), four stages
             of basic residual blocks at 32/64/128/256 channels (strides 1, 2, 2, 2;
             ``resnet_blocks`` per stage, 8 in the reference), no normalisation, global average
             pooling, linear to the latent.

All scale frames to [-0.5, 0.5], apply the random-shift augmentation when ``shift_pad > 0``
(training only) and map ``[N, C, H, W]`` uint8 -> ``[N, latent_dim]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PIXEL_ENCODERS = ("flatten", "pooled", "resnet")
RESNET_WIDTHS = (32, 64, 128, 256)
RESNET_STRIDES = (1, 2, 2, 2)


def scale_frames(obs: Tensor) -> Tensor:
    """uint8 frames ``[..., C, H, W]`` -> float32 ``x / 255 - 0.5`` in [-0.5, 0.5], computed in place on one
    copy: the out-of-place form's values bit for bit, without its two more frame-sized float buffers
    (7.1 -> 3.9 ms for 512 frames on the project's CPU). ``obs`` itself is never written."""
    return obs.to(torch.float32, copy=True).div_(255.0).sub_(0.5)


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


def _he_init(module: nn.Module, mode: str = "fan_in") -> None:
    """He (Kaiming, ReLU gain) init of every conv in ``module``, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut, no normalisation:
    ``relu(shortcut(x) + conv(relu(conv(x))))``; ``[N, c_in, H, W] -> [N, c_out, H/stride, W/stride]``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.conv2(F.relu(self.conv1(x))))


def resnet_trunk(in_channels: int, blocks: int) -> nn.Sequential:
    """The reference ResNet up to (and including) global average pooling: ``[N, C, H, W] -> [N, 256]``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, RESNET_WIDTHS[0], 7, stride=2, padding=3, bias=False), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]  # fmt: skip
    c = RESNET_WIDTHS[0]
    for width, stride in zip(RESNET_WIDTHS, RESNET_STRIDES):
        for i in range(blocks):
            layers.append(BasicBlock(c, width, stride if i == 0 else 1))
            c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    trunk = nn.Sequential(*layers)
    _he_init(trunk, mode="fan_out")
    return trunk


def conv_trunk(in_channels: int, channels: int, pooled: bool) -> nn.Sequential:
    """TD-MPC2's four convs (7s2, 5s2, 3s2, 3s1); ``pooled`` pads them and ends in ReLU + average pooling."""
    pads = (3, 2, 1, 1) if pooled else (0, 0, 0, 0)
    layers: list[nn.Module] = []
    c = in_channels
    for (k, s), p in zip(((7, 2), (5, 2), (3, 2), (3, 1)), pads):
        layers += [nn.Conv2d(c, channels, k, stride=s, padding=p), nn.ReLU()]
        c = channels
    layers = layers[:-1]  # the flatten encoder's last conv is linear, as in TD-MPC2
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()] if pooled else [nn.Flatten()]
    trunk = nn.Sequential(*layers)
    _he_init(trunk)
    return trunk


class PixelEncoder(nn.Module):
    """``[N, C, H, W]`` uint8 -> ``[N, latent_dim]``: scale to [-0.5, 0.5], shift aug, conv trunk (``convs``), linear head.

    Convs are He-initialised with zero bias. PyTorch's default conv init shrinks the signal ~2x per
    layer; on counting frames (a few small objects on black) the latent then varies by ~0.2% across
    images and neither the aux loss nor supervised counting learns in thousands of steps
    (measured; see docs/results.md).

    Args:
        obs_shape: ``(C, H, W)``.
        num_channels: conv channels of the ``flatten`` / ``pooled`` trunks (the ResNet's are fixed).
        latent_dim: output size.
        shift_pad: random-shift augmentation (0 disables).
        arch: one of :data:`PIXEL_ENCODERS`.
        resnet_blocks: basic blocks per ResNet stage.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_channels: int,
        latent_dim: int,
        shift_pad: int = 3,
        arch: str = "flatten",
        resnet_blocks: int = 8,
    ) -> None:
        super().__init__()
        check_pixel_encoder(arch, obs_shape, resnet_blocks)
        c = obs_shape[0]
        self.aug = ShiftAug(shift_pad)
        if arch == "resnet":
            self.convs = resnet_trunk(c, resnet_blocks)
        else:
            self.convs = conv_trunk(c, num_channels, pooled=arch == "pooled")
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[-1]
        self.head = nn.Linear(flat, latent_dim)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.aug(scale_frames(obs))
        w = self.convs[0].weight
        if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():  # agent's perf.channels_last
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.convs(x))


def min_frame_size(arch: str) -> int:
    """The smallest square frame side an encoder accepts (the unpadded convs need 29 pixels)."""
    return 29 if arch == "flatten" else 1


def check_pixel_encoder(arch: str, obs_shape: tuple[int, ...], resnet_blocks: int = 8) -> None:
    """Raise a ``ValueError`` naming the option when ``arch`` does not fit ``obs_shape``."""
    if arch not in PIXEL_ENCODERS:
        raise ValueError(f"unknown model.pixel_encoder {arch!r}; expected one of {PIXEL_ENCODERS}")
    if len(obs_shape) != 3:
        raise ValueError(f"model.pixel_encoder={arch} needs (C, H, W) pixel observations, got shape {tuple(obs_shape)}")
    if arch == "resnet" and resnet_blocks < 1:
        raise ValueError(f"model.resnet_blocks must be >= 1, got {resnet_blocks}")
    side = min(obs_shape[1:])
    if side < min_frame_size(arch):
        fits = [a for a in PIXEL_ENCODERS if side >= min_frame_size(a)]
        raise ValueError(
            f"model.pixel_encoder={arch} needs frames of at least {min_frame_size(arch)}x{min_frame_size(arch)}, "
            f"the task's are {obs_shape[1]}x{obs_shape[2]}; encoders that fit: {fits}"
        )
