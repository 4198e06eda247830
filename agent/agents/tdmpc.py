"""The TD-MPC2-style agent on a P-JEPA world model: one update step and acting with MPPI."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from agent.agents.compiled import check_compile, compiled
from agent.agents.update import (
    ADAM_EPS,
    FiniteWatch,
    ModeSwitch,
    adam,
    autocast,
    check_precision,
    load_optimizer,
    optimizer_step,
)
from agent.auxiliary import AuxTask
from agent.data.rows import to_device
from agent.losses.pjepa import check_routing
from agent.losses.tdmpc import TERMS, policy_loss, world_model_losses
from agent.models.heads import RunningScale, polyak
from agent.models.tdmpc import TDMPCModel
from planner.mppi import MPPI, MPPIConfig


@dataclass
class TDMPCConfig:
    """Plain values of the update (TD-MPC2 defaults; ``dyn`` is TD-MPC2's consistency weight).

    Attributes:
        loss_scales: weights of ``dyn``, ``aux`` (c_p), ``reward``, ``value``, ``termination``.
        routing, detach_target, rho: the P-JEPA switches (see :mod:`agent.losses.pjepa`).
        discount: TD discount (see :func:`agent.heads.discount_from_episode_length`).
        lr, eps, enc_lr_scale, grad_clip: world-model optimiser (Adam).
        pi_lr, entropy_coef: policy prior optimiser (Adam eps 1e-5) and entropy bonus.
        tau: Polyak rate of the target Q ensemble.
        precision: ``fp32``, ``bf16`` or ``auto`` (autocast of the update's forward passes and of planning; weights,
            optimiser state and the planner's sampling distribution stay fp32).
        compile: run each of the update's two losses (forward and backward) through ``torch.compile`` as
            one graph, and both planners' prior rollouts and iterations (``MPPI(compile=...)``); the losses'
            random draws come from torch's generator as in eager code (inductor's ``fallback_random``). Compiles at the first
            update (~30-60 s on 2 CPU cores); the same maths up to kernel rounding.
        compile_mode: ``torch.compile``'s mode with ``compile`` (:data:`agent.agents.compiled.COMPILE_MODES`;
            ``reduce-overhead`` records CUDA graphs on a GPU, see :func:`agent.agents.compiled.compiled`).
        fused_adam: both optimisers' fused Adam kernel instead of the multi-tensor form
            (see :func:`agent.agents.update.adam`).
    """

    loss_scales: dict[str, float] = field(
        default_factory=lambda: {"dyn": 20.0, "aux": 1.0, "reward": 0.1, "value": 0.1, "termination": 1.0}
    )
    routing: str = "joint"
    detach_target: bool = False
    rho: float = 0.5
    discount: float = 0.99
    lr: float = 3e-4
    eps: float = ADAM_EPS
    enc_lr_scale: float = 0.3
    grad_clip: float = 20.0
    pi_lr: float = 3e-4
    entropy_coef: float = 1e-4
    tau: float = 0.01
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"
    fused_adam: bool = False

    def __post_init__(self) -> None:
        check_routing(self.routing)
        check_precision(self.precision)
        check_compile(self.compile, self.compile_mode)
        if set(self.loss_scales) != set(TERMS):
            raise ValueError(f"loss_scales must have exactly the keys {TERMS}, got {sorted(self.loss_scales)}")
        if not 0 < self.discount <= 1 or not 0 < self.tau <= 1:
            raise ValueError(f"discount and tau must be in (0, 1], got {self.discount}, {self.tau}")


class TDMPCAgent(nn.Module):
    """Owns the model, the aux task, two optimisers, the Q scale and the planner."""

    def __init__(self, model: TDMPCModel, aux: AuxTask, cfg: TDMPCConfig, planner: MPPIConfig, seed: int = 0) -> None:
        super().__init__()
        self.model, self.aux, self.cfg = model, aux, cfg
        self.scale = RunningScale(cfg.tau)
        wm_params = [
            {"params": list(model.wm.encoder.parameters()), "lr": cfg.lr * cfg.enc_lr_scale},
            {"params": list(model.wm.dynamics.parameters()) + list(model.reward_head.parameters()) + list(model.qs.parameters())},
        ]
        if model.termination_head is not None:
            wm_params.append({"params": list(model.termination_head.parameters())})
        aux_params = [p for p in aux.parameters() if p.requires_grad]
        if aux_params:
            wm_params.append({"params": aux_params})
        self.optim = adam(wm_params, cfg.lr, cfg.eps, fused=cfg.fused_adam)
        self.pi_optim = adam(model.policy.parameters(), cfg.pi_lr, eps=1e-5, fused=cfg.fused_adam)
        compile_plan = partial(compiled, mode=cfg.compile_mode) if cfg.compile else None
        self.planner = MPPI(model, planner, seed=seed, compile=compile_plan)
        self.eval_planner = MPPI(model, planner, seed=seed + 1, compile=compile_plan)  # evaluation never disturbs training's warm start
        # The losses are kept unbound and called with the agent, so a deep copy runs them on itself. Compiled,
        # whole-loss graphs let inductor fuse the elementwise work between the products (LayerNorm, Mish,
        # two-hot, soft cross-entropy) forward and backward: 1.06-1.24x the eager 1M update (5 Q heads) on an AVX2 CPU,
        # ahead of compiling each network alone (docs/benchmarks.md); fallback_random: torch's generator.
        self._wm_losses, self._pi_loss = type(self).wm_losses, type(self).pi_loss
        if cfg.compile:
            kw = {"mode": cfg.compile_mode, "dynamic": False, "options": {"fallback_random": True}}
            self._wm_losses, self._pi_loss = compiled(self._wm_losses, **kw), compiled(self._pi_loss, **kw)
        self.finite = FiniteWatch()  # checks each step at once on a CPU; on a GPU the run asks it (raise_if_bad)
        self._modes = ModeSwitch(self)  # last: every submodule is in place

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def optim_state(self) -> dict:
        """Both optimisers' states, for checkpoints."""
        return {"wm": self.optim.state_dict(), "pi": self.pi_optim.state_dict()}

    def load_optim_state(self, state: dict) -> None:
        """Restore :meth:`optim_state`."""
        load_optimizer(self.optim, state["wm"])
        load_optimizer(self.pi_optim, state["pi"])

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One step on ``obs [H+1, B, ...]``, ``action``/``reward``/``terminated`` ``[H, B, .]`` (+ aux keys).

        Returns detached metrics ``loss/<term>``, ``loss/total``, ``loss/pi``, ``grad_norm``.
        Raises :class:`NonFiniteLossError` before any parameter changes when a loss is NaN/inf (on a CPU; on a
        GPU the steps are recorded in :attr:`finite`, whose ``raise_if_bad`` raises it).
        """
        self._modes(True)
        c = self.cfg
        with autocast(self.device, c.precision):
            total, terms, rollout = self._wm_losses(self, batch)
        grad_norm = optimizer_step(self.optim, total, c.grad_clip, "world-model", terms, self.finite)
        # used: dropped before the policy step (compiled under CUDA graphs, the backward wrote them into the graphs'
        # memory, which the policy loss's step reuses; the policy loss would add its Q gradients into them)
        self.optim.zero_grad(set_to_none=True)
        with autocast(self.device, c.precision):
            pi_loss = self._pi_loss(self, rollout)  # TD-MPC2: on the rollout
        optimizer_step(self.pi_optim, pi_loss, c.grad_clip, "policy", watch=self.finite)
        self.model.qs.zero_grad(set_to_none=True)  # the policy loss must not leak into the next Q step
        polyak(self.model.target_qs, self.model.qs, c.tau)
        metrics = {f"loss/{k}": v.detach() for k, v in terms.items()}
        metrics.update({"loss/total": total.detach(), "loss/pi": pi_loss.detach(), "grad_norm": grad_norm.detach()})
        return metrics

    def wm_losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The world model's weighted total loss, its unweighted fp32 ``terms`` and the detached latent
        rollout ``[H+1, B, D]`` (the policy prior's inputs) on a batch as :meth:`update`'s."""
        c = self.cfg
        terms, rollout = world_model_losses(
            self.model, self.aux, batch, self.aux.targets(batch),
            routing=c.routing, rho=c.rho, detach_target=c.detach_target, discount=c.discount,
        )  # fmt: skip
        terms = {k: v.float() for k, v in terms.items()}
        return sum(c.loss_scales[k] * v for k, v in terms.items()), terms, rollout

    def pi_loss(self, rollout: Tensor) -> Tensor:
        """The policy prior's fp32 loss on the detached rollout ``[H+1, B, D]`` (updates the Q scale)."""
        c = self.cfg
        return policy_loss(self.model, rollout, self.scale, c.entropy_coef, c.rho).float()

    @torch.no_grad()
    def act(self, obs: Tensor, eval_mode: bool = False, use_planner: bool = True) -> Tensor:
        """Actions ``[N, A]`` for observations ``[N, *obs_shape]``: MPPI, or the policy prior alone.

        Eval mode uses its own planner (own warm start and generator), so evaluating in the middle
        of a training episode leaves the training planner's state alone.
        """
        self._modes(False)
        with autocast(self.device, self.cfg.precision):
            z = self.model.encode(to_device(obs, self.device)).float()  # the planner's distribution stays fp32
            if use_planner:
                return (self.eval_planner if eval_mode else self.planner).plan(z, eval_mode=eval_mode).float()
            sample = self.model.policy(z)
            return (sample.mean if eval_mode else sample.action).float()
