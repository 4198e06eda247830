"""The P-JEPA loss ``L = L_dyn + c_p * L_p`` with its gradient routings, as pure functions.

Routing (the paper's rows and ablation):
    joint     encoder gets grad from L_dyn and L_p (P-JEPA)
    separate  aux head trained on detached latents: encoder gets grad from L_dyn only
    aux_only  dynamics trained on detached latents: encoder gets grad from L_p only
"""

from __future__ import annotations

from torch import Tensor

from agent.auxiliary import AuxTask
from agent.world_model import WorldModel

ROUTINGS = ("joint", "separate", "aux_only")


def check_routing(routing: str) -> str:
    """Validate a routing name."""
    if routing not in ROUTINGS:
        raise ValueError(f"unknown gradient routing {routing!r}; expected one of {ROUTINGS}")
    return routing


def dynamics_loss(wm: WorldModel, z: Tensor, actions: Tensor, rho: float, detach_target: bool) -> Tensor:
    """``sum_t rho^t * mean ||T^t(z_0, a_{<t}) - z_{t+1}||^2 / H``.

    Args:
        z: encoded observations ``[H+1, B, D]`` (time-major).
        actions: ``[H, B, A]``.
    Returns:
        scalar loss (mean over batch and latent dims).
    """
    horizon = actions.shape[0]
    target = z[1:].detach() if detach_target else z[1:]
    pred, loss = z[0], z.new_zeros(())
    for t in range(horizon):
        pred = wm.next(pred, actions[t])
        loss = loss + rho**t * (pred - target[t]).pow(2).mean()
    return loss / horizon


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
) -> tuple[dict[str, Tensor], Tensor]:
    """Named P-JEPA loss terms (unweighted).

    Args:
        obs: ``[H+1, B, *obs_shape]`` observations.
        actions: ``[H, B, A]``.
        aux_target: ``[H+1, B, ...]`` targets ``p(o_t)`` (``None`` for the ``none`` task).
    Returns:
        ``({"dyn": ..., "aux": ...}, z)`` with ``z [H+1, B, D]`` the online latents.
    """
    check_routing(routing)
    if obs.shape[0] != actions.shape[0] + 1:
        raise ValueError(f"need H+1 observations for H actions, got {obs.shape[0]} and {actions.shape[0]}")
    z = wm.encode(obs)
    z_dyn = z.detach() if routing == "aux_only" else z
    losses = {"dyn": dynamics_loss(wm, z_dyn, actions, rho, detach_target)}
    if aux.active:
        if aux_target is None:
            raise ValueError(f"auxiliary task {aux.name!r} needs a target")
        z_aux = z.detach() if routing == "separate" else z
        losses["aux"] = aux.loss(z_aux.flatten(0, 1), aux_target.flatten(0, 1)).mean()
    return losses, z
