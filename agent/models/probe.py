"""Decoder probe: reconstructs the observation from a *detached* latent, to see what z keeps."""

from __future__ import annotations

from torch import Tensor, nn


class DecoderProbe(nn.Module):
    """linear -> 32x4x4 -> 5 transposed convs -> tanh, as in the paper's reference code.

    Four stride-2 transposed convs take 4x4 to 64x64 with channels ``32, 32, 32, 16, 8`` (halved
    at 32x32 and 64x64 to cut the probe's cost ~4x on a CPU; the reference does not fix them),
    then a 3x3 stride-1 transposed conv to RGB. ``z [N, D] -> [N, 3, 64, 64]`` in [-1, 1].
    Its input is always ``z.detach()``, so the probe never shapes the representation.
    """

    def __init__(self, latent_dim: int, channels: int = 32, out_channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Linear(latent_dim, channels * 4 * 4)
        widths = [channels, channels, channels, channels // 2, channels // 4]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):  # 4 -> 8 -> 16 -> 32 -> 64
            layers += [nn.ReLU(), nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
        layers += [nn.ReLU(), nn.ConvTranspose2d(widths[-1], out_channels, 3, stride=1, padding=1), nn.Tanh()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z.detach()).view(-1, self.channels, 4, 4))

    @staticmethod
    def target(obs: Tensor) -> Tensor:
        """uint8 frames -> the probe's target range [-1, 1]."""
        return obs.float() / 127.5 - 1.0

    def loss(self, z: Tensor, obs: Tensor) -> Tensor:
        """Mean squared reconstruction error of ``obs [N, 3, 64, 64]`` uint8 from ``z [N, D]``."""
        return (self(z) - self.target(obs)).pow(2).mean()
