"""How fast could the agents update and plan on this machine? Their matrix products and convolutions alone, replayed.

Records every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``) and convolution (forward and
``convolution_backward``) that one job dispatches, with each operand's shape, strides and dtype and the
other arguments, then times exactly those calls alone on fresh operands of the same layout: a floor for
what any implementation of the same model can reach with this machine's BLAS/oneDNN, before the
activations, norms, optimiser and sampling around them. Beside it, in the same run, the measured job.

Jobs: the TD-MPC2 agent's MPPI plan and update at ``--presets`` (fp32 and bf16; the shapes of
``planning_latency.py``: obs 24, action 6, TD-MPC2's planner defaults, batch 256, horizon 3), and with
``--rep`` the representation job's update on the counting task (the default job's settings, bf16 +
channels-last, and the fp32 path; batch 256, horizon 1; with and without the decoder probe step the
job takes every ``probe.every``-th update).

    python benchmarks/compute_floor.py [--presets 1m 5m] [--rep] [--iters 10]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timing import timed
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from walker import OBS, update_batch, walker_agent

aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
CONVS = {aten.convolution.default, aten.convolution_backward.default}


@dataclass(frozen=True)
class TensorSpec:
    """What a replayed operand must match: shape, strides (memory layout) and dtype."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    def make(self) -> torch.Tensor:
        """Random values in this layout (a view of a flat buffer, so broadcast strides work too)."""
        size = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else 0
        return torch.randn(size).to(self.dtype).as_strided(self.shape, self.stride)


@dataclass(frozen=True)
class Call:
    """One recorded product or convolution: the op, its arguments (tensors as specs) and its FLOPs."""

    func: Any
    args: tuple
    kwargs: dict
    flops: int
    kind: str  # gemm | conv


def _spec(x: Any) -> Any:
    return TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x


def conv_flops(out_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> int:
    """A convolution's FLOPs (2 per multiply-add): every output element sums ``C_in/groups x kernel`` products."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def call_flops(func: Any, args: tuple, out: Any) -> int:
    """FLOPs of one product or convolution call (``args`` as dispatched, ``out`` its result)."""
    if func in (aten.bmm.default, aten.baddbmm.default):  # [n, m, k] @ [n, k, p]
        a, b = args[-2].shape, args[-1].shape
        return 2 * a[0] * a[1] * a[2] * b[2]
    if func in (aten.mm.default, aten.addmm.default):  # [m, k] @ [k, p]
        a, b = args[-2].shape, args[-1].shape
        return 2 * a[0] * a[1] * b[1]
    if func is aten.convolution.default:
        return conv_flops(tuple(out.shape), tuple(args[1].shape))
    # convolution_backward(grad_out, input, weight, ..., output_mask): grad of the input and of the
    # weight each cost one forward; the bias's is a sum
    grad_out, weight, mask = args[0], args[2], args[-1]
    return conv_flops(tuple(grad_out.shape), tuple(weight.shape)) * (int(mask[0]) + int(mask[1]))


class ComputeRecorder(TorchDispatchMode):
    """Records every matrix product and convolution run under it as a :class:`Call`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in GEMMS or func in CONVS:
            kind = "conv" if func in CONVS else "gemm"
            self.calls.append(Call(func, tree_map(_spec, args), tree_map(_spec, kwargs), call_flops(func, args, out), kind))
        return out


def replay(calls: list[Call]) -> Callable[[], None]:
    """A function that runs the recorded calls, in order, on fixed random operands of their layouts."""
    made = [(c.func, tree_map(lambda x: x.make() if isinstance(x, TensorSpec) else x, (c.args, c.kwargs))) for c in calls]

    def run() -> None:
        for func, (args, kwargs) in made:
            func(*args, **kwargs)

    return run


def tdmpc_jobs(presets: list[str], precisions: list[str]) -> list[tuple[str, str, Callable[[], object]]]:
    """``(label, job, fn)``: the TD-MPC2 agent's plan and update per preset and precision."""
    obs, jobs = torch.randn(1, OBS), []
    for preset in presets:
        for precision in precisions:
            agent, batch = walker_agent(preset, overrides=(f"perf.precision={precision}",)), update_batch()
            jobs.append((f"{preset} {precision}", "plan", lambda a=agent: a.act(obs, eval_mode=False)))
            jobs.append((f"{preset} {precision}", "update", lambda a=agent, b=batch: a.update(b)))
    return jobs


def rep_jobs(precisions: list[str]) -> list[tuple[str, str, Callable[[], object]]]:
    """``(label, job, fn)``: the counting representation update, bf16 + channels-last and the fp32 path."""
    from train_throughput import config, filled_buffer

    from agent.agents.factory import build_agent

    jobs = []
    variants = {"bf16": ("rep bf16+cl", " perf.precision=bf16"), "fp32": ("rep fp32", " perf.precision=fp32 perf.channels_last=false")}
    for label, extra in (variants[p] for p in ("bf16", "fp32") if p in precisions):
        cfg = config("counting" + extra, 256, "cpu")
        torch.manual_seed(0)
        agent, batch = build_agent(cfg, (3, 64, 64), 1, "cpu"), filled_buffer(cfg, frames=4096).sample()
        jobs.append((label, "update", lambda a=agent, b=batch: a.update(b, train_probe=False)))
        jobs.append((label, "+probe", lambda a=agent, b=batch: a.update(b, train_probe=True)))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["1m", "5m"], help="TD-MPC2 model presets (none: skip the agent)")
    parser.add_argument("--rep", action="store_true", help="also the counting representation job's update")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="fp32 alone where bf16 is emulated (an order of magnitude slower there)")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads")
    head = f"{'variant':>12} {'job':>7} {'GFLOP':>7} {'gemms':>6} {'convs':>6} {'floor ms':>9} {'GFLOP/s':>8} {'measured ms':>12} {'share':>6}"
    print(head)
    for label, job, fn in [*tdmpc_jobs(args.presets, args.precisions), *(rep_jobs(args.precisions) if args.rep else [])]:
        fn()  # warm-up
        rec = ComputeRecorder()
        with rec:
            fn()
        measured = timed(fn, args.iters, "cpu")
        floor = timed(replay(rec.calls), args.iters, "cpu")
        gflop = sum(c.flops for c in rec.calls) / 1e9
        n_conv = sum(c.kind == "conv" for c in rec.calls)
        print(
            f"{label:>12} {job:>7} {gflop:>7.2f} {len(rec.calls) - n_conv:>6} {n_conv:>6} {floor * 1e3:>9.1f} "
            f"{gflop / floor:>8.1f} {measured * 1e3:>12.1f} {floor / measured:>6.0%}", flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
