"""P-JEPA training throughput: updates/s per model preset, model maths alone and with the replay buffer.

Baseline in the same run: the ``small`` preset (the CPU default). Also prints the replay-buffer
sample time, each row's peak working memory of one update (``timing.peak_memory``) and the process's peak.

    python benchmarks/train_throughput.py [--presets tiny small 1m 5m] [--batch-size 256] [--device cpu] [--malloc-reuse]
    python benchmarks/train_throughput.py --presets small "small model.pixel_encoder=pooled" "small model.pixel_encoder=resnet model.resnet_blocks=1"

A preset may carry Hydra overrides after its name (one quoted argument); the first row is the baseline.
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from timing import add_malloc_reuse, apply_malloc_reuse, peak_memory, timed

from agent.agents.factory import build_agent
from agent.data.buffer import ReplayBuffer
from agent.data.collection import TRAJ_KEY, RepeatedRandomPolicy, make_collector
from envs.counting import CountingEnv

ROOT = Path(__file__).resolve().parents[1]


def config(preset: str, batch: int, device: str):
    """``preset`` is a model preset name, optionally followed by space-separated Hydra overrides (eager
    unless they say ``perf.compile=true`` or ``auto``: the baseline stays eager whatever the job's default)."""
    name, *extra = preset.split()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[f"model={name}", f"batch_size={batch}", f"device={device}", "perf.compile=false", *extra])


def filled_buffer(cfg, frames: int = 20_000):
    env = CountingEnv(batch_size=(256,), seed=0)
    policy = RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, 4, seed=0)
    collector = make_collector(env, policy, 2048)
    buffer = ReplayBuffer(frames, int(cfg.horizon), int(cfg.batch_size), TRAJ_KEY, ("obs_reward", "count"), device=cfg.device)
    it, got = iter(collector), 0
    while got < frames:
        got += buffer.extend(next(it))
    collector.shutdown()
    return buffer



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "1m", "5m"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    add_malloc_reuse(parser)
    args = parser.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    allocator = apply_malloc_reuse(args.malloc_reuse)
    print(f"torch {torch.__version__} on {name}; batch {args.batch_size}, horizon 1; {allocator}")
    buffer = filled_buffer(config("small", args.batch_size, dev))
    sample_s = timed(buffer.sample, args.iters, dev)
    print(f"replay sample + time-major batch: {sample_s * 1e3:.1f} ms")
    base = args.presets[0]
    print(f"{'preset':>7} {'params':>9} {'updates/s (model)':>18} {'updates/s (with buffer)':>24} {'vs ' + base:>9} {'update MiB':>11}")
    rows, cuda_peak = {}, 0  # peak_memory resets CUDA's peak statistics: the process's peak is kept here
    for preset in args.presets:
        cfg = config(preset, args.batch_size, dev)
        torch.manual_seed(0)
        agent = build_agent(cfg, (3, 64, 64), 1, dev)
        batch = buffer.sample()
        model_s = timed(lambda: agent.update(batch), args.iters, dev)

        def full() -> None:
            agent.update(buffer.sample())

        full_s = timed(full, args.iters, dev)
        rows[preset] = 1 / full_s
        params = sum(p.numel() for p in agent.parameters() if p.requires_grad)
        cuda_peak = max(cuda_peak, torch.cuda.max_memory_allocated() if dev.startswith("cuda") else 0)
        rel, mib = f"{rows[preset] / rows[base]:.2f}x", peak_memory(lambda: agent.update(batch), dev) / 2**20
        print(f"{preset:>7} {params:>9,} {1 / model_s:>18.2f} {1 / full_s:>24.2f} {rel:>9} {mib:>11.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MiB" + (f"; peak CUDA memory {max(cuda_peak, torch.cuda.max_memory_allocated()) / 2**20:.0f} MiB" if dev.startswith("cuda") else ""))


if __name__ == "__main__":
    main()
