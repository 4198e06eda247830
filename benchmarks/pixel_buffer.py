"""The online replay ring of a frame-stacked pixel task: its memory and its store-and-sample, stored three ways.

    python benchmarks/pixel_buffer.py [--size 20000] [--iters 50] [--rounds 3]

DMC pixel shapes: ``pixels`` uint8 ``[9, 64, 64]`` (3 frames of 3x64x64 stacked, as ``CatFrames`` gives them:
a reset's frame repeated), episodes of 500 agent steps, batch 256, horizon 3, one step per write. The ring is
filled a lap and a half (its oldest episode cut), then each timed step stores one transition and samples a
batch. Rows: both whole stacks per transition (the buffer before ``obs_once``), each stack once (``obs_once``),
and each transition's newest frame (``obs_once`` + ``frame_stack=3``, the online job's now). Memory is the
resident memory each ring added to the process (its pages in use: ``torch.empty`` leaves the rest unmapped).
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
from replay_buffer import alternate, online_ms  # (this script's folder)
from tensordict import TensorDict

from agent.data.buffer import ReplayBuffer

FRAME, STACK, EPISODE = (3, 64, 64), 3, 500
ROWS = {"both stacks": {}, "obs_once": {"obs_once": True}, "frame_stack=3": {"obs_once": True, "frame_stack": STACK}}


class Stream:
    """Consecutive env steps of a pixel task, one transition each, with the frame stacks ``CatFrames`` gives."""

    def __init__(self, pool: int = 512) -> None:
        self.frames = torch.randint(0, 256, (pool, *FRAME), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        self.step = 0

    def frame(self, i: int) -> torch.Tensor:
        return self.frames[i % len(self.frames)]

    def stack(self, i: int, first: int) -> torch.Tensor:
        return torch.cat([self.frame(max(j, first)) for j in range(i - STACK + 1, i + 1)])

    def next(self) -> TensorDict:
        i = self.step
        first = i - i % EPISODE
        last = i % EPISODE == EPISODE - 1
        self.step += 1
        nxt = torch.cat([self.stack(i, first)[FRAME[0] :], self.frame(i + 1 if not last else 10**6 + i)])
        return TensorDict(
            {"pixels": self.stack(i, first), "action": torch.rand(6), "episode": torch.tensor(i // EPISODE),
             "next": {"pixels": nxt, "reward": torch.rand(1), "terminated": torch.tensor([last])}},
            [],
        )  # fmt: skip


def resident_mib() -> float:
    """The process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(size: int, kw: dict, steps: int) -> tuple[ReplayBuffer, list[TensorDict], float]:
    """A ring filled a lap and a half, the next ``steps`` transitions, and the resident MiB the ring added."""
    gc.collect()
    before = resident_mib()
    buf, stream = ReplayBuffer(size, 3, 256, "episode", step_keys=("reward", "terminated"), **kw), Stream()
    for _ in range(size * 3 // 2):
        buf.extend(stream.next())
    gc.collect()
    return buf, [stream.next() for _ in range(steps)], resident_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="the ring's transitions")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per row, the rows taking turns (after a warm-up)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads; ring of {args.size:,} steps of {STACK}x{FRAME}")
    built = {}
    for name, kw in ROWS.items():  # filled one after another, each kept: the resident memory grows by each ring's pages
        buf, steps, mib = built[name] = build(args.size, kw, args.iters * (args.rounds + 1))
        print(f"{name:>14}: the ring added {mib:7.0f} MiB resident (tails {buf.tails:,})", flush=True)
    got = alternate({name: (lambda b=b: online_ms(b[0], b[1], args.iters)) for name, b in built.items()}, args.rounds)
    base = got["both stacks"]
    for name, ms in got.items():
        print(f"{name:>14}: store 1 + sample {ms:7.2f} ms ({base / ms:.2f}x both stacks)")


if __name__ == "__main__":
    main()
