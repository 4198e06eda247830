"""The P-JEPA world model: encoder ``E(o) -> z`` and latent transition ``T(z, a) -> z'``.

No target / EMA encoder: the dynamics target is the online encoder's ``E(o_{t+1})``.
The auxiliary head ``P(z)`` lives in :mod:`agent.auxiliary` and is owned by the agent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agent.models.encoders import PixelEncoder
from agent.models.nets import StateEncoder, latent_out, mlp

ENCODERS = ("auto", "pixels", "state")


class WorldModel(nn.Module):
    """Encoder and latent dynamics.

    Args:
        obs_shape: one observation's shape: ``(C, H, W)`` uint8 pixels or ``(D,)`` state.
        action_dim: size of the action vector.
        latent_dim: size of z.
        enc_dim: hidden width of the state encoder.
        mlp_dim: hidden width of the dynamics MLP.
        num_channels: conv channels of the pixel encoder.
        simnorm: end the latent (encoder and dynamics) in SimNorm; the paper's runs use it off.
        simnorm_dim: SimNorm group size.
        encoder: ``"auto"`` picks from ``obs_shape``; ``"pixels"`` / ``"state"`` insist.
        enc_layers: layers of the state encoder.
        shift_pad: random-shift augmentation of the pixel encoder (0 disables).
        pixel_encoder: ``flatten`` (TD-MPC2) | ``pooled`` | ``resnet`` (the paper's reference),
            see :mod:`agent.models.encoders`; state observations use the MLP encoder whatever it says.
        resnet_blocks: basic blocks per ResNet stage (8 in the reference).
        dyn_layers: hidden layers of the dynamics MLP (TD-MPC2 2, the paper's code 1).
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        action_dim: int,
        latent_dim: int = 256,
        enc_dim: int = 256,
        mlp_dim: int = 512,
        num_channels: int = 32,
        simnorm: bool = False,
        simnorm_dim: int = 8,
        encoder: str = "auto",
        enc_layers: int = 2,
        shift_pad: int = 3,
        pixel_encoder: str = "flatten",
        resnet_blocks: int = 8,
        dyn_layers: int = 2,
    ) -> None:
        super().__init__()
        obs_shape = tuple(int(s) for s in obs_shape)
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {ENCODERS}")
        kind = "pixels" if len(obs_shape) == 3 else "state" if len(obs_shape) == 1 else None
        if kind is None:
            raise ValueError(f"observations must be (C, H, W) pixels or (D,) states, got shape {obs_shape}")
        if encoder != "auto" and encoder != kind:
            raise ValueError(
                f"model preset asks for a {encoder!r} encoder but the task's observations are {kind} "
                f"of shape {obs_shape}; use model.encoder=auto or a {kind} preset"
            )
        if dyn_layers < 1:
            raise ValueError(f"model.dyn_layers must be >= 1, got {dyn_layers}")
        if simnorm and latent_dim % simnorm_dim:
            raise ValueError(f"latent_dim {latent_dim} must be a multiple of simnorm_dim {simnorm_dim}")
        self.obs_shape, self.action_dim, self.latent_dim, self.kind = obs_shape, action_dim, latent_dim, kind
        if kind == "pixels":
            body: nn.Module = PixelEncoder(obs_shape, num_channels, latent_dim, shift_pad, pixel_encoder, resnet_blocks)
        else:
            body = StateEncoder(obs_shape[0], enc_dim, latent_dim, enc_layers)
        self.encoder = nn.Sequential(body, latent_out(simnorm, simnorm_dim))
        self.dynamics = mlp(latent_dim + action_dim, [mlp_dim] * dyn_layers, latent_dim, latent_out(simnorm, simnorm_dim))

    def encode(self, obs: Tensor) -> Tensor:
        """``obs [*lead, *obs_shape] -> z [*lead, latent_dim]`` (any number of leading dims)."""
        nd = len(self.obs_shape)
        if tuple(obs.shape[obs.dim() - nd :]) != self.obs_shape:
            raise ValueError(f"expected observations [..., {', '.join(map(str, self.obs_shape))}], got {tuple(obs.shape)}")
        lead = obs.shape[: obs.dim() - nd]
        return self.encoder(obs.reshape(-1, *self.obs_shape)).reshape(*lead, self.latent_dim)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """``T(z, a)``: ``z [*lead, D]``, ``action [*lead, A]`` -> ``[*lead, D]``."""
        if action.shape[-1] != self.action_dim or action.shape[:-1] != z.shape[:-1]:
            raise ValueError(f"action shape {tuple(action.shape)} does not match latent {tuple(z.shape)} / action_dim {self.action_dim}")
        return self.dynamics(torch.cat([z, action.to(z.dtype)], -1))
