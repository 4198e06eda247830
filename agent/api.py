"""Use a trained model from Python.

    from agent.api import load
    model = load("runs/counting4/reward-joint/<time>")    # a run directory or a .pt checkpoint
    z = model.encode(pixels)                             # uint8 [B, 3, 64, 64] -> float [B, D]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from agent.agents.factory import load_pjepa_agent
from agent.agents.pjepa import PJEPAAgent


class TrainedModel:
    """A trained P-JEPA agent in eval mode, with its config and training step."""

    def __init__(self, agent: PJEPAAgent, config: dict, step: int, path: Path) -> None:
        self.agent, self.config, self.step, self.path = agent.eval(), config, step, path

    @property
    def device(self) -> torch.device:
        return self.agent.device

    @property
    def latent_dim(self) -> int:
        return self.agent.wm.latent_dim

    def _check_obs(self, obs: Tensor) -> Tensor:
        shape = self.agent.wm.obs_shape
        if not isinstance(obs, Tensor):
            obs = torch.as_tensor(obs)
        if obs.dim() != len(shape) + 1 or tuple(obs.shape[1:]) != shape:
            raise ValueError(f"expected observations [B, {', '.join(map(str, shape))}], got {tuple(obs.shape)}")
        if self.agent.wm.kind == "pixels" and obs.dtype != torch.uint8:
            raise ValueError(f"pixel observations must be uint8 in 0..255, got {obs.dtype}")
        return obs

    @torch.no_grad()
    def encode(self, obs: Tensor, batch_size: int = 1024) -> Tensor:
        """``obs [B, *obs_shape]`` (uint8 pixels) -> latents ``[B, D]`` on the CPU, no augmentation."""
        obs = self._check_obs(obs)
        chunks = [self.agent.encode(obs[i : i + batch_size]).cpu() for i in range(0, len(obs), batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.latent_dim)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """The decoder probe's reconstruction of latents ``[B, D]``: ``[B, 3, 64, 64]`` in [-1, 1]."""
        if self.agent.probe is None:
            raise RuntimeError("this model was trained without the decoder probe (probe.enabled=false)")
        return self.agent.probe(z.to(self.device)).cpu()


def load(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a run directory or checkpoint file into a :class:`TrainedModel` on ``device``.

    Raises:
        CheckpointError: missing/corrupt file, or weights that do not fit the saved config.
    """
    agent, cfg, step, ckpt = load_pjepa_agent(path, device)
    return TrainedModel(agent, cfg, step, ckpt)
