"""One optimiser step, written once for every agent: finite check, backward, clip, finite grads, step."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from agent.agents.finite import FiniteWatch, NonFiniteLossError


def optimizer_step(
    optim: torch.optim.Optimizer, loss: Tensor, clip: float, what: str,
    terms: Mapping[str, Tensor] | None = None, watch: FiniteWatch | None = None,
) -> Tensor:  # fmt: skip
    """``loss.backward()``, clip the gradient norm of ``optim``'s parameters to ``clip``, step.

    ``watch`` (by default one that checks at once) checks the loss and the gradient norm: checking at once,
    a NaN/inf raises :class:`NonFiniteLossError` naming ``what`` (and the loss ``terms``) before any parameter
    changes; a deferred watch records it for its :meth:`FiniteWatch.raise_if_bad`. Returns the pre-clip
    gradient norm.
    """
    watch = watch or FiniteWatch(deferred=False)
    watch.loss(what, loss, terms)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optim.param_groups for p in g["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, clip)
    try:
        watch.grads(what, loss, grad_norm, terms)
    except NonFiniteLossError:
        optim.zero_grad(set_to_none=True)
        raise
    optim.step()
    return grad_norm


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` (a part of an agent, e.g. its encoder) in eval mode inside the block, then in its own mode
    again, also on an error. ``train`` walks every submodule (~2 us each on the project's CPU), so it is called
    only where the mode changes."""
    was = module.training
    if was:
        module.train(False)
    try:
        yield
    finally:
        if was:
            module.train(True)


class ModeSwitch:
    """``module.train(mode)`` for a module whose tree does not change, without the walk: every submodule's flag
    under either mode is recorded once from the module's own ``train`` (so overrides that keep a part in eval
    mode, such as a target network, hold), then set directly (~5 us for an agent against ~130 us for the walk
    here; the online job switches twice per env step: eval to plan, train to update). Nothing happens when the
    module is in that mode already. A deep copy of the owner copies its switch onto the copied modules."""

    def __init__(self, module: nn.Module) -> None:
        was = module.training
        self.modules = list(module.modules())
        self.flags = {}
        for mode in (True, False):
            module.train(mode)
            self.flags[mode] = [m.training for m in self.modules]
        module.train(was)

    def __call__(self, training: bool) -> None:
        if self.modules[0].training == training:
            return
        for m, flag in zip(self.modules, self.flags[training]):
            m.__dict__["training"] = flag  # what nn.Module.train sets, without nn.Module.__setattr__'s checks


PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device computes it natively, else fp32


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` for a precision other than :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CPU with ``avx512_bf16`` or AMX, a CUDA GPU of the
    Ampere generation or newer (or a ROCm GPU). Elsewhere, and on any other device type, bf16 autocast
    counts as emulated: far slower than fp32 on an AVX2-only CPU (docs/benchmarks.md, "Emulated bf16")."""
    if device.type == "cuda":
        return torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":  # torch.cpu's own probes (private: absent ones count as no)
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or for ``auto`` bf16 exactly where ``device`` has native bf16."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' precision context: bf16 autocast on ``device``'s type, or a no-op for fp32
    (weights, optimiser state and what is stored stay fp32); ``auto`` as :func:`resolve_precision`
    (the agent factories resolve it once, so hot code passes fp32 or bf16)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")


ADAM_EPS = 1e-8  # PyTorch's default: what optim.eps means when a config predates it
HYPERPARAMS = ("lr", "eps", "weight_decay", "betas", "foreach", "fused")  # an optimiser's own, never a checkpoint's


def adam(params: Iterable, lr: float, eps: float = ADAM_EPS, fused: bool = False) -> torch.optim.Adam:
    """Adam over ``params`` (tensors or parameter groups): the multi-tensor (``foreach``) form, or with
    ``fused`` torch's fused kernel (one pass over each tensor: CPU and CUDA).

    On a CPU torch picks the per-parameter loop by default; the multi-tensor form gives the same
    numbers bit for bit (tested) in ~0.6x the time, the fused kernel the same maths rounded
    differently (~1 ulp per step, tested within a tolerance) in ~0.2x (docs/benchmarks.md).
    Checkpoints of either form load into the other (:func:`load_optimizer`).
    """
    if fused:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


def load_optimizer(optim: torch.optim.Optimizer, state: dict) -> None:
    """Restore ``optim``'s moments and step counts from ``state`` but keep its own hyperparameters.

    ``Optimizer.load_state_dict`` would also bring back the saved groups' ``lr``, ``eps``, ... so a
    resumed run with a changed ``optim.*`` setting would silently train with the old one; here the
    values the optimiser was built with (from the run's config) win. So does its Adam kernel
    (``fused`` or not): torch places each step count by the saved groups' kernel, so those are
    rewritten first (a fused run's counts on the parameters' device, as its kernel needs on a GPU), and
    each moment takes its parameter's memory layout (the fused kernel walks the two in memory order:
    a checkpoint from a run with another ``perf.channels_last`` would otherwise step the wrong
    elements).
    """
    own = [{k: g[k] for k in HYPERPARAMS if k in g} for g in optim.param_groups]
    kernel = ("fused", "capturable")
    groups = [{**saved, **{k: g.get(k) for k in kernel}} for saved, g in zip(state["param_groups"], optim.param_groups)]
    optim.load_state_dict({**state, "param_groups": groups})
    for group, values in zip(optim.param_groups, own):
        group.update(values)
    for p, moments in optim.state.items():
        for k, v in moments.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                moments[k] = torch.empty_like(p).copy_(v)


LR_SCHEDULES = ("constant", "cosine", "step")


def lr_scale(schedule: str, step: int, total: int, min_scale: float, drop_at: int | None = None) -> float:
    """The learning-rate multiplier of update ``step`` (0-based) of ``total``.

    ``constant``: 1. ``cosine``: from 1 at the first update to ``min_scale`` at the last, half a
    cosine (after ``total``, e.g. a run resumed with more steps, it stays at ``min_scale``).
    ``step``: 1 before update ``drop_at``, ``min_scale`` from it on.
    A function of the step alone, so a resumed run sets the rate an unbroken one had.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        if drop_at is None:
            raise ValueError("the step schedule needs drop_at (optim.drop_at: the update where the rate drops)")
        return 1.0 if step < drop_at else min_scale
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    frac = min(step / max(total - 1, 1), 1.0)
    return min_scale + (1.0 - min_scale) * 0.5 * (1.0 + math.cos(math.pi * frac))


def check_finite_weights(named: Iterable[tuple[str, Tensor]]) -> None:
    """Raise :class:`NonFiniteLossError` naming the first floating tensor holding NaN/inf."""
    for name, t in named:
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            raise NonFiniteLossError(f"weight {name} holds NaN/inf (the learning rate is too high for this model?)")


def training_stopped(step: int, err: Exception, last: Path) -> NonFiniteLossError:
    """The error a run stops with: the step, the cause, and where its last good checkpoint is kept."""
    kept = f"The last good checkpoint is kept at {last}" if last.exists() else f"No checkpoint was written before it ({last})"
    return NonFiniteLossError(f"training stopped at step {step}: {err}. {kept}")
