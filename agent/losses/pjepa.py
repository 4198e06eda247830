"""The P-JEPA loss ``L = L_dyn + c_p * L_p`` with its gradient routings, as pure functions.

Routing (the paper's rows and ablation):
    joint     encoder gets grad from L_dyn and L_p (P-JEPA)
    separate  aux head trained on detached latents: encoder gets grad from L_dyn only
    aux_only  dynamics trained on detached latents: encoder gets grad from L_p only
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from agent.auxiliary import AuxTask
from agent.models.world_model import WorldModel

ROUTINGS = ("joint", "separate", "aux_only")


def check_routing(routing: str) -> str:
    """Validate a routing name."""
    if routing not in ROUTINGS:
        raise ValueError(f"unknown gradient routing {routing!r}; expected one of {ROUTINGS}")
    return routing


def rho_weights(horizon: int, rho: float, like: Tensor) -> Tensor:
    """``[rho^0, ..., rho^(H-1)]`` on ``like``'s device and dtype: ``[H]``."""
    return rho ** torch.arange(horizon, device=like.device, dtype=like.dtype)


def latent_rollout(wm: WorldModel, z0: Tensor, actions: Tensor) -> Tensor:
    """``z0 [B, D]`` rolled through ``T`` with ``actions [H, B, A]``: ``[H+1, B, D]`` (first = ``z0``)."""
    zs = [z0]
    for t in range(actions.shape[0]):
        zs.append(wm.next(zs[-1], actions[t]))
    return torch.stack(zs)


def dynamics_loss(rollout: Tensor, z: Tensor, rho: float, detach_target: bool) -> Tensor:
    """``sum_t rho^t * mean ||T^t(z_0, a_{<t}) - z_{t+1}||^2 / H``.

    Args:
        rollout: predicted latents ``[H+1, B, D]`` from :func:`latent_rollout`.
        z: encoded observations ``[H+1, B, D]`` (time-major).
    Returns:
        scalar loss (mean over batch and latent dims).
    """
    horizon = rollout.shape[0] - 1
    target = z[1:].detach() if detach_target else z[1:]
    per_step = (rollout[1:] - target).pow(2).mean(dim=(1, 2))  # [H]
    return (rho_weights(horizon, rho, per_step) * per_step).sum() / horizon


class PJEPAOutput(NamedTuple):
    """Loss terms, online latents ``z [H+1, B, D]`` and the dynamics rollout ``[H+1, B, D]``."""

    terms: dict[str, Tensor]
    z: Tensor
    rollout: Tensor


def pjepa_losses(
    wm: WorldModel,
    aux: AuxTask,
    obs: Tensor,
    actions: Tensor,
    aux_target: Tensor | None,
    *,
    routing: str = "joint",
    rho: float = 0.5,
    detach_target: bool = False,
) -> PJEPAOutput:
    """Named P-JEPA loss terms (unweighted).

    Args:
        obs: ``[H+1, B, *obs_shape]`` observations.
        actions: ``[H, B, A]``.
        aux_target: ``[H+1, B, ...]`` targets ``p(o_t)`` (``None`` for the ``none`` task).
    Returns:
        ``({"dyn": ..., "aux": ...}, z, rollout)``; the rollout starts from a detached ``z_0``
        under ``aux_only``, so heads trained on it leave the encoder alone too.
    """
    check_routing(routing)
    if obs.shape[0] != actions.shape[0] + 1:
        raise ValueError(f"need H+1 observations for H actions, got {obs.shape[0]} and {actions.shape[0]}")
    z = wm.encode(obs)
    z_dyn = z.detach() if routing == "aux_only" else z
    rollout = latent_rollout(wm, z_dyn[0], actions)
    losses = {"dyn": dynamics_loss(rollout, z_dyn, rho, detach_target)}
    if aux.active:
        if aux_target is None:
            raise ValueError(f"auxiliary task {aux.name!r} needs a target")
        z_aux = z.detach() if routing == "separate" else z
        losses["aux"] = aux.loss(z_aux.flatten(0, 1), aux_target.flatten(0, 1)).mean()
    return PJEPAOutput(losses, z, rollout)
