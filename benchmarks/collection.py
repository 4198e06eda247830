"""The representation job's collection: torchrl's Collector in the job's process (the baseline), the direct
collector (the same batches, ``agent.data.collection.DirectCollector``), and ``data.workers`` processes of it.

Each row stores the default job's collects (64 counting envs, 1,024 transitions each, ``reward_type=dense``)
into a replay buffer, as the job does every ``collect_every=10`` updates. Figures per row:

- alone: ms per collect (collect + store) with the main process doing nothing else; ``collect_every`` over it
  is the cap: the most updates/s the collection allows however fast the updates are;
- beside updates: the main process's stall per collect when it spends ``--gap`` ms between collects away
  from the CPU (sleeping: a GPU job's host mostly waits for the device), and the updates/s that gives,
  ``collect_every`` per ``gap + stall``;
- the store: ``both`` keeps every transition's next frame (the job before ``obs_once``), ``once`` each frame
  once (the job's buffer); "tails" is the share of transitions that keep a next frame of their own.

The ring is on ``--storage-device`` (``cuda``: the job's ``data.device=cuda``, the copies queued through pinned
memory; "alone" then waits for them at the end).

    python benchmarks/collection.py [--workers 0 1 2] [--store both once] [--collects 20] [--gap 40] [--storage-device cpu]
    (workers 0: the direct collector, in this process)
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
        return WorkerCollection(
            shards(TASK, seed=seed, total=num_envs, workers=workers, frames_per_batch=frames, action_hold=4, carry=False)
        )
    env = make_env({"task": TASK}, num_envs=num_envs, seed=seed, device="cpu")
    space = env.action_spec.space
    return LocalCollection(make_collector(env, RepeatedRandomPolicy(space.low, space.high, 4, seed=seed), frames, direct=direct))


def measure(
    workers: int, collects: int, gap_ms: float, num_envs: int = 64, frames: int = 1024, direct: bool = True,
    obs_once: bool = True, storage_device: str = "cpu",
) -> dict[str, float]:
    """ms per collect alone, and the stall per collect with ``gap_ms`` of waiting between collects."""
    source = collection(workers, num_envs, frames, direct=direct)
    buffer = ReplayBuffer(
        100_000, 1, 256, TRAJ_KEY, obs_keys=("obs_reward", "count"), obs_once=obs_once, storage_device=storage_device
    )  # fmt: skip
    done = torch.cuda.synchronize if torch.device(storage_device).type == "cuda" else lambda: None

    def store() -> int:
        return sum(buffer.extend(part) for part in next(source))

    try:
        for _ in range(2):  # warm-up (and the workers' start)
            store()
        start = time.perf_counter()
        got = sum(store() for _ in range(collects))
        done()
        alone = (time.perf_counter() - start) / collects
        stall = 0.0
        for _ in range(collects):
            time.sleep(gap_ms / 1e3)
            start = time.perf_counter()
            store()
            stall += time.perf_counter() - start
        done()
    finally:
        source.shutdown()
    tails = buffer.tails / len(buffer)
    return {"alone_ms": alone * 1e3, "frames_per_s": got / (alone * collects), "stall_ms": stall / collects * 1e3, "tails": tails}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--store", nargs="+", choices=["both", "once"], default=["both", "once"])
    parser.add_argument("--collects", type=int, default=20)
    parser.add_argument("--storage-device", default="cpu", help="where the replay ring is (cuda: as data.device=cuda)")
    parser.add_argument("--gap", type=float, default=40.0, help="ms between collects (the updates)")
    parser.add_argument("--collect-every", type=int, default=10, help="updates per collect, for the updates/s column")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}; 64 envs, 1,024 transitions per collect; {args.gap:g} ms between collects; "
        f"ring on {args.storage_device}"
    )  # fmt: skip
    print(
        f"{'collection':>14} {'store':>5} {'tails':>6} {'ms/collect alone':>17} {'frames/s':>9} {'cap updates/s':>14} "
        f"{'stall ms at gap':>16} {'updates/s at gap':>17}"
    )  # fmt: skip
    base = None
    for w in [None, *args.workers]:  # None: the baseline, torchrl's Collector in this process (first store)
        for store in args.store:
            r = measure(
                w or 0, args.collects, args.gap, direct=w is not None, obs_once=store == "once", storage_device=args.storage_device
            )  # fmt: skip
            cap, at_gap = args.collect_every / (r["alone_ms"] / 1e3), args.collect_every / ((args.gap + r["stall_ms"]) / 1e3)
            base = base or at_gap
            name = "torchrl" if w is None else "direct" if w == 0 else f"{w} worker(s)"
            print(
                f"{name:>14} {store:>5} {r['tails']:>6.0%} {r['alone_ms']:>17.1f} {r['frames_per_s']:>9.0f} {cap:>14.0f} "
                f"{r['stall_ms']:>16.1f} {at_gap:>17.0f}  ({at_gap / base:.2f}x)"
            )  # fmt: skip


if __name__ == "__main__":
    main()
