"""Counting-env throughput: rendered observations per second at several batch sizes.

Baseline in the same run: the same number of observations from a Python loop over single
(unbatched) envs, i.e. what a non-vectorised env would give. Also the torch renderer (the same
frames, drawn with torch on the env's device) on the CPU, and on CUDA when a GPU is present.

    python benchmarks/env_throughput.py [--steps 50] [--batch-sizes 1 64 1024]
"""

from __future__ import annotations

import argparse
import time

import torch

from envs.counting import CountingEnv


def throughput(batch: int, steps: int, seed: int = 0, renderer: str = "numpy", device: str = "cpu") -> float:
    """Observations per second of one batched env stepping with random actions (auto-reset)."""
    env = CountingEnv(batch_size=(batch,), seed=seed, renderer=renderer, device=device)
    gen = torch.Generator().manual_seed(seed)
    actions = (torch.rand(steps, batch, 1, generator=gen) * 2 - 1).to(device)
    td = env.reset()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(steps):
        td.set("action", actions[t])
        _, td = env.step_and_maybe_reset(td)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def loop_baseline(batch: int, steps: int, seed: int = 0) -> float:
    """Observations per second of ``batch`` single envs stepped one after the other."""
    envs = [CountingEnv(seed=seed + i) for i in range(batch)]
    tds = [e.reset() for e in envs]
    start = time.perf_counter()
    for _ in range(steps):
        for i, env in enumerate(envs):
            tds[i].set("action", torch.rand(1) * 2 - 1)
            _, tds[i] = env.step_and_maybe_reset(tds[i])
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    cuda = torch.cuda.is_available()
    print(f"{'batch':>6} {'obs/s':>12} {'loop of single envs obs/s':>27} {'speed-up':>9} {'torch renderer, cpu':>20}"
          + (f" {'torch renderer, cuda':>21}" if cuda else ""))  # fmt: skip
    for b in args.batch_sizes:
        fast = throughput(b, args.steps)
        base = loop_baseline(min(b, 64), max(2, args.steps // 5))
        torch_cpu = throughput(b, args.steps, renderer="torch")
        row = f"{b:>6} {fast:>12,.0f} {base:>27,.0f} {fast / base:>8.1f}x {torch_cpu:>20,.0f}"
        print(row + (f" {throughput(b, args.steps, renderer='torch', device='cuda'):>21,.0f}" if cuda else ""))


if __name__ == "__main__":
    main()
