"""The representation job's collection: torchrl's Collector in the job's process (the baseline), the direct
collector (the same batches, ``agent.data.collection.DirectCollector``), and ``data.workers`` processes of it.

Each row stores the default job's collects (64 counting envs, 1,024 transitions each, ``reward_type=dense``)
into a replay buffer, as the job does every ``collect_every=10`` updates. Two figures per row:

- alone: ms per collect (collect + store) with the main process doing nothing else;
- beside updates: the main process's stall per collect when it spends ``--gap`` ms between collects
  away from the CPU (sleeping: a GPU job's host mostly waits for the device), i.e. what the updates
  wait for; ``collect_every`` over it is the most updates/s the collection allows.

    python benchmarks/collection.py [--workers 0 1 2] [--collects 20] [--gap 40]   (0: direct, in this process)
"""

from __future__ import annotations

import argparse
import time

import torch

from agent.data.buffer import ReplayBuffer
from agent.data.collection import TRAJ_KEY, RepeatedRandomPolicy, make_collector
from agent.data.workers import LocalCollection, WorkerCollection, shards
from envs import make_env

TASK = {"suite": "counting", "name": "counting4", "reward_type": "dense"}


def collection(workers: int, num_envs: int, frames: int, seed: int = 0, direct: bool = True) -> LocalCollection | WorkerCollection:
    """The job's collection: in this process (``workers=0``; torchrl's Collector unless ``direct``) or split
    over ``workers`` processes (each with the direct collector)."""
    if workers:
        return WorkerCollection(shards(TASK, seed, num_envs, workers, frames, 4, False))
    env = make_env({"task": TASK}, num_envs=num_envs, seed=seed, device="cpu")
    space = env.action_spec.space
    return LocalCollection(make_collector(env, RepeatedRandomPolicy(space.low, space.high, 4, seed=seed), frames, direct=direct))


def measure(
    workers: int, collects: int, gap_ms: float, num_envs: int = 64, frames: int = 1024, direct: bool = True
) -> dict[str, float]:
    """ms per collect alone, and the stall per collect with ``gap_ms`` of waiting between collects."""
    source = collection(workers, num_envs, frames, direct=direct)
    buffer = ReplayBuffer(100_000, 1, 256, TRAJ_KEY, obs_keys=("obs_reward", "count"))

    def store() -> int:
        return sum(buffer.extend(part) for part in next(source))

    try:
        for _ in range(2):  # warm-up (and the workers' start)
            store()
        start = time.perf_counter()
        got = sum(store() for _ in range(collects))
        alone = (time.perf_counter() - start) / collects
        stall = 0.0
        for _ in range(collects):
            time.sleep(gap_ms / 1e3)
            start = time.perf_counter()
            store()
            stall += time.perf_counter() - start
    finally:
        source.shutdown()
    return {"alone_ms": alone * 1e3, "frames_per_s": got / (alone * collects), "stall_ms": stall / collects * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--collects", type=int, default=20)
    parser.add_argument("--gap", type=float, default=40.0, help="ms between collects (the updates)")
    parser.add_argument("--collect-every", type=int, default=10, help="updates per collect, for the updates/s column")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; 64 envs, 1,024 transitions per collect; {args.gap:g} ms between collects")
    print(f"{'collection':>18} {'ms/collect alone':>17} {'frames/s':>9} {'stall ms beside updates':>24} {'most updates/s':>15}")
    base = None
    for w in [None, *args.workers]:  # None: the baseline, torchrl's Collector in this process
        r = measure(w or 0, args.collects, args.gap, direct=w is not None)
        base = base or r["stall_ms"]
        rate = args.collect_every / (r["stall_ms"] / 1e3)
        name = "torchrl" if w is None else "direct" if w == 0 else f"{w} worker(s)"
        print(f"{name:>18} {r['alone_ms']:>17.1f} {r['frames_per_s']:>9.0f} {r['stall_ms']:>24.1f} {rate:>15.0f}  ({base / r['stall_ms']:.1f}x)")


if __name__ == "__main__":
    main()
