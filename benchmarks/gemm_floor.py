"""How fast can the TD-MPC2 agent plan and update on this machine? The matrix products alone, replayed.

Records every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``) one MPPI plan and one update
dispatch (forward and backward), with its shapes and dtype, then times those products alone on fresh
tensors: a floor for what any implementation of the same model and planner can reach with this
machine's BLAS/oneDNN, before the activations, norms and sampling around them. Beside it, in the
same run, the measured plan and update of the eager agent (fp32 and bf16). Same shapes as
``planning_latency.py`` (obs 24, action 6, TD-MPC2's planner defaults, batch 256, horizon 3).
The replay uses contiguous operands (a transposed or broadcast operand of the original may cost
more or less) and leaves out matrix-vector products (none in these models).

    python benchmarks/gemm_floor.py [--presets 1m 5m] [--iters 10]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from timing import timed
from torch.utils._python_dispatch import TorchDispatchMode
from walker import OBS, update_batch, walker_agent

aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


class GemmRecorder(TorchDispatchMode):
    """Records ``(op, operand shapes, dtype)`` of every matrix product run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in GEMMS:
            self.calls.append((func, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)), args[-1].dtype))
        return func(*args, **(kwargs or {}))


def flops(call: tuple) -> int:
    """Floating-point operations of one recorded product (2 per multiply-add)."""
    func, shapes, _ = call
    a, b = shapes[-2:]
    if func in (aten.bmm.default, aten.baddbmm.default):  # [n, m, k] @ [n, k, p]
        return 2 * a[0] * a[1] * a[2] * b[2]
    return 2 * a[0] * a[1] * b[1]  # [m, k] @ [k, p]


def replay(calls: list[tuple]) -> Callable[[], None]:
    """A function that runs the recorded products, in order, on fixed random operands."""
    operands = [(func, [torch.randn(s).to(dtype) for s in shapes]) for func, shapes, dtype in calls]

    def run() -> None:
        for func, args in operands:
            func(*args)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads")
    print(f"{'preset':>6} {'precision':>9} {'job':>7} {'GFLOP':>7} {'products':>9} {'products ms':>12} {'GFLOP/s':>8} {'measured ms':>12} {'share':>6}")
    obs = torch.randn(1, OBS)
    for preset in args.presets:
        for precision in ("fp32", "bf16"):
            agent, batch = walker_agent(preset, overrides=(f"perf.precision={precision}",)), update_batch()
            jobs = {"plan": lambda: agent.act(obs, eval_mode=False), "update": lambda: agent.update(batch)}  # noqa: B023
            for job, fn in jobs.items():
                fn()  # warm-up
                rec = GemmRecorder()
                with rec:
                    fn()
                measured = timed(fn, args.iters, "cpu")
                gemm_s = timed(replay(rec.calls), args.iters, "cpu")
                gflop = sum(flops(c) for c in rec.calls) / 1e9
                print(
                    f"{preset:>6} {precision:>9} {job:>7} {gflop:>7.2f} {len(rec.calls):>9} {gemm_s * 1e3:>12.1f} "
                    f"{gflop / gemm_s:>8.1f} {measured * 1e3:>12.1f} {gemm_s / measured:>6.0%}", flush=True,
                )  # fmt: skip


if __name__ == "__main__":
    main()
