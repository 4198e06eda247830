"""The P-JEPA training agent: world model + auxiliary task + decoder probe, optimisers, one update."""

from __future__ import annotations

from collections.abc import Callable
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
    eval_mode,
    load_optimizer,
    optimizer_step,
)
from agent.auxiliary import AuxTask
from agent.losses.pjepa import check_routing, pjepa_losses
from agent.models.probe import DecoderProbe
from agent.models.world_model import WorldModel


@dataclass
class UpdateConfig:
    """Plain values the update needs (resolved from the Hydra config before the hot loop).

    Attributes:
        routing: ``joint`` | ``separate`` | ``aux_only`` (see :mod:`agent.losses.pjepa`).
        detach_target: stop-gradient on the dynamics target ``E(o_{t+1})``.
        rho: per-step decay of the dynamics loss.
        loss_scales: weights of the named loss terms; ``aux`` is the paper's ``c_p``.
        lr: Adam learning rate.
        eps: Adam's epsilon (PyTorch's 1e-8 by default; larger damps the steps of parameters whose
            gradients have gone quiet).
        enc_lr_scale: encoder learning-rate multiplier (TD-MPC2 uses 0.3).
        grad_clip: max global grad norm of the world model + aux head.
        probe: train the decoder probe alongside.
        probe_lr: the probe's learning rate.
        probe_batch: samples of each batch the probe trains on (its decoder costs ~3x the encoder).
        precision: ``fp32``, ``bf16`` or ``auto`` (autocast of the update's forward passes; weights, optimiser
            state and the analysis stay fp32).
        channels_last: keep conv weights and frames in channels-last memory (same maths, faster convs).
        compile: run the loss (forward and backward) through ``torch.compile`` (inductor; the first
            update compiles, ~40 s on 2 CPU cores); same maths up to kernel rounding.
        compile_mode: ``torch.compile``'s mode with ``compile`` (:data:`agent.agents.compiled.COMPILE_MODES`).
        fused_adam: the optimisers' fused Adam kernel instead of the multi-tensor form (see :func:`adam`).
    """

    routing: str = "joint"
    detach_target: bool = False
    rho: float = 0.5
    loss_scales: dict[str, float] = field(default_factory=lambda: {"dyn": 1.0, "aux": 1.0})
    lr: float = 3e-4
    eps: float = ADAM_EPS
    enc_lr_scale: float = 1.0
    grad_clip: float = 20.0
    probe: bool = True
    probe_lr: float = 3e-4
    probe_batch: int = 64
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    fused_adam: bool = False

    def __post_init__(self) -> None:
        check_routing(self.routing)
        check_precision(self.precision)
        check_compile(self.compile, self.compile_mode)
        unknown = set(self.loss_scales) - {"dyn", "aux"}
        if unknown or "dyn" not in self.loss_scales:
            raise ValueError(f"loss_scales must have keys 'dyn' (and 'aux'), got {sorted(self.loss_scales)}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if self.lr <= 0 or self.grad_clip <= 0 or self.eps <= 0:
            raise ValueError(f"lr, eps and grad_clip must be positive, got {self.lr}, {self.eps}, {self.grad_clip}")


class PJEPAAgent(nn.Module):
    """Owns the modules and optimisers; ``update`` does one gradient step on a time-major batch."""

    def __init__(self, wm: WorldModel, aux: AuxTask, cfg: UpdateConfig) -> None:
        super().__init__()
        self.wm, self.aux, self.cfg = wm, aux, cfg
        self.probe = DecoderProbe(wm.latent_dim) if cfg.probe and wm.kind == "pixels" else None
        groups = [
            {"params": list(wm.encoder.parameters()), "lr": cfg.lr * cfg.enc_lr_scale},
            {"params": list(wm.dynamics.parameters())},
        ]
        trainable = [p for p in aux.parameters() if p.requires_grad]
        if trainable:
            groups.append({"params": trainable})
        self.optim = adam(groups, cfg.lr, cfg.eps, fused=cfg.fused_adam)
        self._base_lrs = [g["lr"] for g in self.optim.param_groups]  # what set_lr_scale multiplies
        self.probe_optim = adam(self.probe.parameters(), cfg.probe_lr, fused=cfg.fused_adam) if self.probe else None
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D conv weights only; the rest is unchanged
        # compiled once per agent when asked; unbound, so a deep copy of the agent runs it on itself
        self._compiled_losses = compiled(type(self).losses, cfg.compile_mode) if cfg.compile else None
        # the probe's step too: eager, its ~100 launches every 4th update were a third of the compiled update's (docs/benchmarks.md)
        self._compiled_probe = compiled(type(self).probe_loss, cfg.compile_mode) if cfg.compile and self.probe else None
        self.finite = FiniteWatch()  # checks each step at once on a CPU; on a GPU the run asks it (raise_if_bad)
        self._modes = ModeSwitch(self)  # last: every submodule is in place

    def autocast(self) -> torch.autocast:
        """The update's precision context (bf16 autocast on the agent's device type, or a no-op)."""
        return autocast(self.device, self.cfg.precision)

    @property
    def device(self) -> torch.device:
        return next(self.wm.parameters()).device

    @property
    def loss_fn(self) -> Callable[[dict[str, Tensor]], tuple[dict[str, Tensor], Tensor]]:
        """The loss function the update runs: :meth:`losses`, compiled with ``perf.compile``."""
        return self.losses if self._compiled_losses is None else partial(self._compiled_losses, self)

    @property
    def probe_fn(self) -> Callable[[Tensor], Tensor]:
        """The probe's loss function the update runs: :meth:`probe_loss`, compiled with ``perf.compile``."""
        return self.probe_loss if self._compiled_probe is None else partial(self._compiled_probe, self)

    def probe_loss(self, obs: Tensor) -> Tensor:
        """The decoder probe's loss on the latents of ``obs [N, *obs_shape]``, no gradient into the encoder
        (the caller puts the encoder in eval mode: clean latents, as the probe is evaluated on)."""
        with torch.no_grad():
            z = self.wm.encode(obs)
        return self.probe.loss(z, obs)

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Unweighted loss terms for a batch (see :func:`agent.losses.pjepa.pjepa_losses`)."""
        out = pjepa_losses(
            self.wm, self.aux, batch["obs"], batch["action"], self.aux.targets(batch),
            routing=self.cfg.routing, rho=self.cfg.rho, detach_target=self.cfg.detach_target,
        )  # fmt: skip
        return out.terms, out.z

    def update(self, batch: dict[str, Tensor], train_probe: bool = True) -> dict[str, Tensor]:
        """One optimiser step (and one decoder-probe step when ``train_probe``).

        Args:
            batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, and the aux task's ``data_keys``
                as ``[H+1, B, ...]``, all on the agent's device.
            train_probe: also step the decoder probe (the trainer does every ``probe.every`` updates).
        Returns:
            detached metrics ``loss/<name>``, ``loss/total``, ``grad_norm`` (and ``loss/probe``).
        Raises:
            NonFiniteLossError: a loss or gradient is NaN/inf; that optimiser's parameters were not changed (on
                a CPU; on a GPU the step is recorded in :attr:`finite`, whose ``raise_if_bad`` raises it).
        """
        self._modes(True)
        with self.autocast():
            terms, _ = self.loss_fn(batch)
        total = sum(self.cfg.loss_scales.get(k, 0.0) * v for k, v in terms.items())
        grad_norm = optimizer_step(self.optim, total, self.cfg.grad_clip, "world-model", terms, self.finite)
        # used: dropped before the probe's step (compiled under CUDA graphs, the backward wrote them into the
        # graphs' memory, which the probe's graphs reuse)
        self.optim.zero_grad(set_to_none=True)
        metrics = {f"loss/{k}": v.detach() for k, v in terms.items()}
        metrics.update({"loss/total": total.detach(), "grad_norm": grad_norm.detach()})
        if self.probe is not None and train_probe:
            obs0 = batch["obs"][0, : self.cfg.probe_batch]
            with eval_mode(self.wm.encoder), self.autocast():  # clean latents, as the probe is evaluated on
                probe_loss = self.probe_fn(obs0)
            optimizer_step(self.probe_optim, probe_loss, float("inf"), "decoder-probe", watch=self.finite)
            metrics["loss/probe"] = probe_loss.detach()
        return metrics

    def set_lr_scale(self, scale: float) -> None:
        """Every world-model parameter group at ``scale`` x its configured rate (the probe's stays)."""
        for group, base in zip(self.optim.param_groups, self._base_lrs):
            group["lr"] = base * scale

    @torch.no_grad()
    def encode(self, obs: Tensor) -> Tensor:
        """Latents without augmentation: ``obs [N, *obs_shape] -> [N, D]`` (the encoder in eval mode, then
        back in its own: the rest of the agent keeps its mode)."""
        with eval_mode(self.wm.encoder):
            return self.wm.encode(obs.to(self.device))

    def optim_state(self) -> dict:
        state = {"optim": self.optim.state_dict()}
        if self.probe_optim is not None:
            state["probe_optim"] = self.probe_optim.state_dict()
        return state

    def load_optim_state(self, state: dict) -> None:
        load_optimizer(self.optim, state["optim"])
        if self.probe_optim is not None and "probe_optim" in state:
            load_optimizer(self.probe_optim, state["probe_optim"])
