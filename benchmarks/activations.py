"""Mish and dropout on the CPU: torch's ``F.mish`` / ``F.dropout`` against the project's forms in :mod:`agent.models.nets`.

Baselines in the same run: ``F.mish`` and the elementwise kernels either form is built on. Shape
``[512, 384]`` (MPPI's 512 samples through a 1M-preset hidden layer), fp32 and bf16 forward without a
gradient (as in planning), and forward + backward in fp32 (eager: ``mish``'s written-out backward;
compiled: the sigmoid form, fused), also at ``--shape`` (default ``768 512``: a 1M hidden layer in an
update, 3 x 256 rows). Dropout at TD-MPC2's ``p = 0.01`` on
``[5, 768, 512]`` (the 1M Q ensemble's first layer in an update: 5 members x 3 x 256 rows), forward
and forward + backward: ``F.dropout`` draws one Bernoulli per element, ``Dropout`` only the dropped
positions.

    python benchmarks/activations.py [--iters 300] [--shape 768 512]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from agent.models.nets import Dropout, mish


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
    parser.add_argument("--shape", type=int, nargs=2, default=[768, 512], help="a second shape for mish forward + backward")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
    x32 = torch.randn(512, 384, generator=torch.Generator().manual_seed(0))
    rows = [
        ("F.mish", F.mish), ("mish (project's)", mish), ("compiled mish", torch.compile(mish)), ("torch.tanh", torch.tanh),
        ("F.softplus", F.softplus), ("torch.exp", torch.exp), ("torch.sigmoid", torch.sigmoid), ("F.silu", F.silu),
    ]  # fmt: skip
    print(f"{'op':>22} {'fp32 us':>9} {'bf16 us':>9} {'fwd+bwd fp32 us':>16}")
    for name, fn in rows:
        fp32, bf16 = per_call_us(fn, x32, args.iters), per_call_us(fn, x32.bfloat16(), args.iters)
        both = per_call_us(forward_backward(fn), x32, args.iters // 3) if "mish" in name else float("nan")
        print(f"{name:>22} {fp32:>9.1f} {bf16:>9.1f} {both:>16.1f}")
    xl = torch.randn(*args.shape, generator=torch.Generator().manual_seed(0))
    print(f"{'fwd+bwd fp32 us':>38}  on {args.shape}")
    for name, fn in rows[:3]:
        print(f"{name:>22} {per_call_us(forward_backward(fn), xl, args.iters // 3):>15.1f}")
    q = torch.randn(5, 768, 512, generator=torch.Generator().manual_seed(0))
    print(f"{'dropout p=0.01':>22} {'fwd fp32 us':>11} {'fwd bf16 us':>11} {'fwd+bwd fp32 us':>16}  on {list(q.shape)}")
    for name, fn in (("F.dropout", lambda x: F.dropout(x, 0.01, True)), ("Dropout (positions)", Dropout(0.01))):
        fp32, bf16 = per_call_us(fn, q, args.iters // 10), per_call_us(fn, q.bfloat16(), args.iters // 10)
        both = per_call_us(forward_backward(fn), q, args.iters // 10)
        print(f"{name:>22} {fp32:>11.1f} {bf16:>11.1f} {both:>16.1f}")


if __name__ == "__main__":
    main()
