"""TD-MPC2's losses on top of the P-JEPA loss, as pure functions of a time-major batch."""

from __future__ import annotations

import torch
from torch import Tensor

from agent.auxiliary import AuxTask
from agent.heads import RunningScale, td_target
from agent.losses import pjepa_losses, rho_weights
from agent.math import soft_ce
from agent.tdmpc import TDMPCModel

TERMS = ("dyn", "aux", "reward", "value", "termination")


def world_model_losses(
    model: TDMPCModel,
    aux: AuxTask,
    batch: dict[str, Tensor],
    aux_target: Tensor | None,
    *,
    routing: str,
    rho: float,
    detach_target: bool,
    discount: float,
) -> dict[str, Tensor]:
    """P-JEPA terms (``dyn``, ``aux``) plus ``reward``, ``value`` and ``termination``.

    Args:
        batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, ``reward [H, B, 1]``,
            ``terminated [H, B, 1]``.
    Returns:
        unweighted scalar terms; reward/value are ``rho^t``-weighted means over the horizon.
        Routing: ``aux_only`` keeps every term but ``aux`` off the encoder; ``separate`` detaches
        only the aux head's input (the TD-MPC2 heads still train the encoder, as in TD-MPC2).
    """
    obs, actions = batch["obs"], batch["action"]
    horizon = actions.shape[0]
    terms, z, zs_t = pjepa_losses(model.wm, aux, obs, actions, aux_target, routing=routing, rho=rho, detach_target=detach_target)
    with torch.no_grad():  # TD targets from the Polyak Q ensemble at the next observation
        next_z = z[1:].detach()
        next_q = model.q_values(next_z, model.pi(next_z), target=True)  # [E, H, B, 1]
        target = td_target(batch["reward"], next_q, batch["terminated"], discount)
    # the reward, value and termination heads read the dynamics rollout ``zs_t [H+1, B, D]``, as
    # TD-MPC2; under aux_only it starts from a detached z_0, so the encoder is trained by L_p alone
    weights = rho_weights(horizon, rho, z)[:, None]
    bins = (model.num_bins, model.vmin, model.vmax)
    r_ce = soft_ce(model.reward_logits(zs_t[:-1], actions), batch["reward"], *bins)  # [H, B, 1]
    q_ce = soft_ce(model.q_logits(zs_t[:-1], actions), target.expand(model.qs.num_q, *target.shape), *bins)
    terms["reward"] = (weights * r_ce.squeeze(-1)).mean(-1).sum() / horizon
    terms["value"] = (weights * q_ce.squeeze(-1).mean(0)).mean(-1).sum() / horizon
    terms["termination"] = model.bce_termination(zs_t[1:], batch["terminated"])
    return terms


def policy_loss(model: TDMPCModel, z: Tensor, scale: RunningScale, entropy_coef: float, rho: float) -> Tensor:
    """TD-MPC2's prior loss on detached latents ``z [H, B, D]``: ``-(Q/scale + entropy_coef * H)``."""
    z = z.detach()
    action, log_prob, _ = model.policy(z)
    q = model.q_values(z, action).mean(0)  # [H, B, 1]
    scale.update(q[0])
    weights = rho_weights(z.shape[0], rho, z)[:, None, None]
    return -(weights * (scale(q) - entropy_coef * log_prob)).mean(dim=(1, 2)).mean()
