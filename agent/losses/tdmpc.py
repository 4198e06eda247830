"""TD-MPC2's losses on top of the P-JEPA loss, as pure functions of a time-major batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from agent.auxiliary import AuxTask
from agent.losses.pjepa import pjepa_losses, rho_weights
from agent.math import soft_ce
from agent.models.heads import RunningScale, td_target
from agent.models.tdmpc import TDMPCModel

TERMS = ("dyn", "aux", "reward", "value", "termination")


class WorldModelOutput(NamedTuple):
    """Unweighted loss terms and the detached latent rollout ``[H+1, B, D]`` (the policy prior's inputs)."""

    terms: dict[str, Tensor]
    rollout: Tensor


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
) -> WorldModelOutput:
    """P-JEPA terms (``dyn``, ``aux``) plus ``reward``, ``value`` and ``termination``.

    Args:
        batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, ``reward [H, B, 1]``,
            ``terminated [H, B, 1]``.
    Returns:
        unweighted scalar terms (reward/value are ``rho^t``-weighted means over the horizon) and
        the detached rollout, on which TD-MPC2 trains the policy prior.
        Routing: ``aux_only`` keeps every term but ``aux`` off the encoder; ``separate`` detaches
        only the aux head's input (the TD-MPC2 heads still train the encoder, as in TD-MPC2).
    """
    obs, actions = batch["obs"], batch["action"]
    horizon = actions.shape[0]
    terms, z, zs_t = pjepa_losses(model.wm, aux, obs, actions, aux_target, routing=routing, rho=rho, detach_target=detach_target)
    with torch.no_grad():  # TD targets from the Polyak Q ensemble at the next observation
        next_z = z[1:].detach()
        pair = model.qs.random_pair()  # TD-MPC2: min over 2 random target members; only those are run
        next_q = model.q_values(next_z, model.pi(next_z), target=True, members=pair)  # [2, H, B, 1]
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
    return WorldModelOutput(terms, zs_t.detach())


def policy_loss(model: TDMPCModel, z: Tensor, scale: RunningScale, entropy_coef: float, rho: float) -> Tensor:
    """TD-MPC2's prior loss on detached latents ``z [H, B, D]``: ``-(Q/scale + entropy_coef * H)``.

    Q is the mean of 2 random ensemble members, as TD-MPC2's ``return_type='avg'``. The entropy
    bonus is TD-MPC2's scaled entropy: minus the pre-squash Gaussian log-prob times the action
    dimension (TD-MPC2 writes it as the squashed log-prob times ``scaled / squashed``, which equals
    this in value and gradient).
    """
    z = z.detach()
    sample = model.policy(z)
    q = model.q_values(z, sample.action, members=model.qs.random_pair()).mean(0)  # [H, B, 1]
    scale.update(q[0])
    weights = rho_weights(z.shape[0], rho, z)[:, None, None]
    entropy = -sample.gaussian_log_prob * sample.action.shape[-1]
    return -(weights * (scale(q) + entropy_coef * entropy)).mean(dim=(1, 2)).mean()
