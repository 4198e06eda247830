"""Replay buffer speed: the online loop's store-and-sample, the representation job's sample, and the online
loop's own env steps/s with a free agent, each against torchrl's ``SliceSampler`` buffer (the buffer before
``agent.data.buffer.ReplayBuffer``) in the same run.

    python benchmarks/replay_buffer.py [--sizes 10000 100000 1000000] [--iters 50] [--rounds 3] [--loop-steps 1500]

Online shapes: walker-walk (obs 24, action 6), episodes of 1,000 steps, batch 256, horizon 3, one transition
stored per sample into a full ring (the steady state of a long run). Representation shapes: 3x64x64 frames stored
1,024 at a time (64 envs x 16 steps, episodes of 4), batch 256, horizon 1; its rows add the job's buffer, which
stores each frame once (``obs_once``), and a store row. The loop row runs ``OnlineTrainer`` on dmc/walker-walk with ``act`` and ``update``
replaced by free stand-ins: what is left is the env, the buffer and the loop itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

from agent.data.buffer import ReplayBuffer
from agent.run.online import OnlineTrainer

ROOT = Path(__file__).resolve().parents[1]


class TorchRLBuffer:
    """The previous buffer: torchrl's storage and ``SliceSampler``, then the same time-major batch."""

    def __init__(self, capacity: int, horizon: int, batch_size: int, traj_key, obs_keys=(), step_keys=(), device="cpu", storage_device="cpu") -> None:
        self.horizon, self.obs_keys, self.step_keys, self.device = horizon, obs_keys, step_keys, torch.device(device)
        self.rb = TensorDictReplayBuffer(
            storage=LazyTensorStorage(capacity, device=torch.device(storage_device)),
            sampler=SliceSampler(slice_len=horizon, traj_key=traj_key, strict_length=True, cache_values=True),
            batch_size=batch_size * horizon,
        )

    def __len__(self) -> int:
        return len(self.rb)

    def extend(self, data: TensorDictBase) -> int:
        flat = data.reshape(-1)
        self.rb.extend(flat)
        return flat.numel()

    def sample(self) -> dict[str, torch.Tensor]:
        s = self.rb.sample().reshape(-1, self.horizon)

        def seq(key: str) -> torch.Tensor:
            return torch.cat([s[key][:, :1], s["next", key]], 1).transpose(0, 1).contiguous()

        out = {"obs": seq("pixels") if "pixels" in s.keys() else seq("observation"), "action": s["action"].transpose(0, 1).contiguous()}
        out.update({k: seq(k) for k in self.obs_keys})
        out.update({k: s["next", k].transpose(0, 1).contiguous() for k in self.step_keys})
        if "terminated" in out:
            out["terminated"] = out["terminated"].float()
        return {k: v.to(self.device, non_blocking=True) for k, v in out.items()}


BUFFERS = {"torchrl SliceSampler (before)": TorchRLBuffer, "ReplayBuffer": ReplayBuffer}
FRAME_BUFFERS = BUFFERS | {"ReplayBuffer(obs_once)": partial(ReplayBuffer, obs_once=True)}  # the representation job's


def state_steps(start: int, n: int) -> TensorDict:
    ep = (start + torch.arange(n)) // 1000
    nxt = {"observation": torch.randn(n, 24), "reward": torch.rand(n, 1), "terminated": torch.zeros(n, 1, dtype=torch.bool)}
    return TensorDict({"observation": torch.randn(n, 24), "action": torch.rand(n, 6), "episode": ep, "next": nxt}, [n])


def frames(start: int, envs: int = 64, t: int = 16, episode: int = 4) -> TensorDict:
    """One collect, env-major: episodes of ``episode`` steps (the counting env's longest) with their
    ``episode + 1`` frames and counts each: a next one is the following step's, but at an episode's end."""
    e = t // episode
    ids = (start // (envs * t) * envs + torch.arange(envs)[:, None]) * e + torch.arange(t)[None] // episode
    px = torch.randint(0, 255, (envs, e, episode + 1, 3, 64, 64), dtype=torch.uint8)
    count = torch.randint(0, 9, (envs, e, episode + 1))

    def steps(x: torch.Tensor, first: int) -> torch.Tensor:  # [envs, e, episode, ...] -> [envs, t, ...]
        return x[:, :, first : first + episode].reshape(envs, t, *x.shape[3:])

    return TensorDict({"pixels": steps(px, 0), "action": torch.rand(envs, t, 1), "count": steps(count, 0),
                       "collector": {"traj_ids": ids}, "next": {"pixels": steps(px, 1), "count": steps(count, 1)}}, [envs, t])  # fmt: skip


def online_buffer(cls, size: int) -> tuple[object, list[TensorDict]]:
    """A full ring of ``size`` walker steps (written ``size + 1000``: the oldest episode overwritten), and the
    steps to store next."""
    buf = cls(size, 3, 256, "episode", step_keys=("reward", "terminated"))
    for start in range(0, size + 1000, 100_000):
        buf.extend(state_steps(start, min(100_000, size + 1000 - start)))
    return buf, [state_steps(size + 1000 + i, 1) for i in range(10_000)]


def online_ms(buf, steps: list[TensorDict], iters: int) -> float:
    """ms per online step: store one transition, then sample a batch."""
    start = time.perf_counter()
    for step in steps[:iters]:
        buf.extend(step)
        buf.sample()
    del steps[:iters]
    return (time.perf_counter() - start) / iters * 1e3


def representation_buffer(cls, size: int):
    buf = cls(size, 1, 256, ("collector", "traj_ids"), obs_keys=("count",))
    for start in range(0, size, 1024):
        buf.extend(frames(start))
    return buf


def representation_ms(buf, iters: int) -> float:
    """ms per representation batch (the job stores 1,024 transitions every 10 updates: not timed)."""
    start = time.perf_counter()
    for _ in range(iters):
        buf.sample()
    return (time.perf_counter() - start) / iters * 1e3


def store_ms(cls, collects: int = 20) -> float:
    """ms per representation collect stored (1,024 transitions) into a ring that has wrapped once."""
    buf, data = cls(10_240, 1, 256, ("collector", "traj_ids"), obs_keys=("count",)), [frames(i * 1024) for i in range(collects)]
    for part in data:
        buf.extend(part)
    start = time.perf_counter()
    for part in data:
        buf.extend(part)
    return (time.perf_counter() - start) / collects * 1e3


def alternate(timers: dict[str, object], rounds: int) -> dict[str, float]:
    """Each timer once untimed (warm-up), then ``rounds`` rounds taking turns; the mean per timer."""
    for timer in timers.values():
        timer()
    got = {name: 0.0 for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            got[name] += timer() / rounds
    return got


def loop_steps_per_s(cls, steps: int) -> float:
    overrides = ["agent=tdmpc2", "task=dmc/walker-walk", "aux=none", "model=tiny", f"agent.total_steps={steps}", "agent.seed_steps=100",
                 "agent.pretrain_updates=1", f"agent.eval_every={steps * 10}", "log.progress=false", "log.tensorboard=false", "perf.compile=false"]  # fmt: skip
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = OnlineTrainer(cfg, run_dir)
        old = trainer.buffer
        trainer.buffer = cls(100_000, old.horizon, 256, "episode", obs_keys=old.obs_keys, step_keys=old.step_keys)
        trainer.evaluate, trainer.save = (lambda: {}), (lambda: None)
        trainer.agent.act = lambda obs, eval_mode=False, use_planner=True: torch.zeros(obs.shape[0], 6)
        trainer.agent.update = lambda batch: {}
        start = time.perf_counter()
        trainer.run()
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per row, the buffers taking turns (after a warm-up)")
    parser.add_argument("--loop-steps", type=int, default=1500, help="env steps of the free-agent loop row (0: skip it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads; means of {args.rounds} alternating rounds")
    base, new = BUFFERS
    print(f"{'job':>14} {'stored':>9} {base + ' ms':>32} {new + ' ms':>16} {'x before':>9}")
    for size in args.sizes:
        built = {k: online_buffer(cls, size) for k, cls in BUFFERS.items()}
        got = alternate({k: (lambda b=b: online_ms(*b, args.iters)) for k, b in built.items()}, args.rounds)
        print(f"{'online':>14} {size:>9,} {got[base]:>32.3f} {got[new]:>16.3f} {got[base] / got[new]:>9.1f}", flush=True)
        del built
    once = list(FRAME_BUFFERS)[-1]
    print(f"{'representation':>14} {'stored':>9} {base + ' ms':>32} {new + ' ms':>16} {once + ' ms':>26}")
    for size in [s for s in args.sizes if s <= 100_000]:  # frames: 12 KiB each, twice per transition (but obs_once)
        built = {k: representation_buffer(cls, size) for k, cls in FRAME_BUFFERS.items()}
        got = alternate({k: (lambda b=b: representation_ms(b, args.iters)) for k, b in built.items()}, args.rounds)
        print(f"{'sample':>14} {size:>9,} {got[base]:>32.3f} {got[new]:>16.3f} {got[once]:>26.3f}", flush=True)
        del built
    got = alternate({k: (lambda cls=cls: store_ms(cls)) for k, cls in FRAME_BUFFERS.items()}, args.rounds)
    print(f"{'store 1,024':>14} {10_240:>9,} {got[base]:>32.3f} {got[new]:>16.3f} {got[once]:>26.3f}", flush=True)
    if args.loop_steps:
        got = alternate({k: (lambda cls=cls: 1 / loop_steps_per_s(cls, args.loop_steps)) for k, cls in BUFFERS.items()}, args.rounds)
        a, b = 1 / got[base], 1 / got[new]
        print(f"online loop with a free agent (dmc/walker-walk, {args.loop_steps} steps): {a:.0f} -> {b:.0f} env steps/s ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
