"""Mish on the CPU: torch's ``F.mish`` against the project's sigmoid form (:func:`agent.models.nets.mish`).

Baselines in the same run: ``F.mish`` and the elementwise kernels either form is built on. Shape
``[512, 384]`` (MPPI's 512 samples through a 1M-preset hidden layer), fp32 and bf16 forward without a
gradient (as in planning), and forward + backward in fp32 (eager: ``mish`` hands a tensor that needs
a gradient to ``F.mish``; compiled: the sigmoid form, fused).

    python benchmarks/activations.py [--iters 300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from agent.models.nets import mish


def per_call_us(fn: Callable[[torch.Tensor], object], x: torch.Tensor, iters: int) -> float:
    """Microseconds per ``fn(x)`` after ten warm-up calls."""
    for _ in range(10):
        fn(x)
    start = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - start) / iters * 1e6


def forward_backward(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], None]:
    def run(x: torch.Tensor) -> None:
        x = x.detach().requires_grad_()
        fn(x).sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
    x32 = torch.randn(512, 384, generator=torch.Generator().manual_seed(0))
    rows = [
        ("F.mish", F.mish), ("mish (sigmoid form)", mish), ("compiled mish", torch.compile(mish)), ("torch.tanh", torch.tanh),
        ("F.softplus", F.softplus), ("torch.exp", torch.exp), ("torch.sigmoid", torch.sigmoid), ("F.silu", F.silu),
    ]  # fmt: skip
    print(f"{'op':>22} {'fp32 us':>9} {'bf16 us':>9} {'fwd+bwd fp32 us':>16}")
    for name, fn in rows:
        fp32, bf16 = per_call_us(fn, x32, args.iters), per_call_us(fn, x32.bfloat16(), args.iters)
        both = per_call_us(forward_backward(fn), x32, args.iters // 3) if "mish" in name else float("nan")
        print(f"{name:>22} {fp32:>9.1f} {bf16:>9.1f} {both:>16.1f}")


if __name__ == "__main__":
    main()
