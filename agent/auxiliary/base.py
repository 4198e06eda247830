"""The auxiliary-task interface: a head ``P(z)`` and a target ``p(o)`` computed from the data."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class AuxTask(nn.Module):
    """Base class of auxiliary targets.

    Built by Hydra from ``configs/aux/<name>.yaml`` with the keyword arguments ``latent_dim`` and
    ``obs_shape`` added by the agent. Subclasses own their head ``P`` (and any frozen target
    network, registered so it is saved with the checkpoint).

    Attributes:
        name: short name used in logs and checkpoints.
        data_keys: keys the target needs from a batch (e.g. ``("obs_reward",)``).
    """

    name: str = "base"
    data_keys: tuple[str, ...] = ()

    def __init__(self, latent_dim: int, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.obs_shape = tuple(obs_shape)

    @property
    def active(self) -> bool:
        """False for the ``none`` target, whose loss is identically zero."""
        return True

    def targets(self, batch: Mapping[str, Tensor]) -> Tensor | None:
        """``p(o)`` over a time-major batch: ``batch[key]`` are ``[T, B, ...]``; returns ``[T, B, ...]``
        (no grad), or ``None`` for an inactive task (``aux=none``)."""
        if not self.active:
            return None
        lead = batch[self.data_keys[0]].shape[:2]
        target = self.target({k: batch[k].flatten(0, 1) for k in self.data_keys})
        return target.reshape(*lead, *target.shape[1:])

    def target(self, data: dict[str, Tensor]) -> Tensor:
        """``p(o)`` for a flat batch: ``data[key]`` are ``[N, ...]``; returns ``[N, ...]``, no grad."""
        raise NotImplementedError

    def loss(self, z: Tensor, target: Tensor) -> Tensor:
        """Per-sample regression loss of ``P(z) [N, D]`` against ``target [N, ...]``: ``[N]``."""
        raise NotImplementedError

    def config_signature(self) -> dict:
        """What must match for a checkpoint of this target to load (name and output size)."""
        return {"name": self.name}
