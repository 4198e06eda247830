"""TD-MPC2 agent speed: MPPI planning ms per action and updates/s, per model preset and fast-path switch.

Baselines in the same run: acting with the policy prior alone (no planning), and each preset's fp32
eager row for the switch rows. Each row also gives the peak working memory of one plan and of one update
(tensor memory above what was allocated before the call: ``timing.peak_memory``). State task shapes
(obs 24, action 6: walker-walk), TD-MPC2's planner defaults, batch 256, horizon 3.

    python benchmarks/planning_latency.py [--presets 1m 5m] [--switches eager bf16 compile compile+bf16 compile+bf16+fused
        autotune+bf16 cudagraphs cudagraphs+bf16]
        [--device cpu] [--iters 10] [--rounds 1] [--malloc-reuse]

With ``--rounds N`` every row is timed N times, the rows taking turns (all agents built first), and the
means are reported: on a noisy 2-core machine this beats a row's single timing (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse

import torch
from timing import add_malloc_reuse, apply_malloc_reuse, peak_memory, timed
from walker import OBS, update_batch, walker_agent

from agent.agents.tdmpc import TDMPCAgent

SWITCHES = {  # precision named in every row: the agent's default (auto) is not the baseline
    "eager": ["perf.precision=fp32"],
    "bf16": ["perf.precision=bf16"],
    "compile": ["perf.compile=true", "perf.precision=fp32"],
    "compile+bf16": ["perf.compile=true", "perf.precision=bf16"],
    "compile+bf16+fused": ["perf.compile=true", "perf.precision=bf16", "perf.fused_adam=true"],  # Adam's fused kernel
    # CUDA graphs on a GPU (inductor's reduce-overhead mode); on a CPU the same graphs as "compile"
    "cudagraphs": ["perf.compile=true", "perf.compile_mode=reduce-overhead", "perf.precision=fp32"],
    "cudagraphs+bf16": ["perf.compile=true", "perf.compile_mode=reduce-overhead", "perf.precision=bf16"],
    # inductor's C++ GEMM templates (AMX micro-kernels in bf16) autotuned against torch's products
    "autotune+bf16": ["perf.compile=true", "perf.compile_mode=max-autotune-no-cudagraphs", "perf.precision=bf16"],
}


def timings(agent: TDMPCAgent, dev: str, iters: int) -> tuple[float, float, float]:
    """Plan s/action, prior-only s/action and s/update of a built (and warmed-up) agent."""
    obs, batch = torch.randn(1, OBS, device=dev), update_batch(dev)
    plan_s = timed(lambda: agent.act(obs, eval_mode=False), iters, dev)
    prior_s = timed(lambda: agent.act(obs, eval_mode=False, use_planner=False), iters, dev)
    return plan_s, prior_s, timed(lambda: agent.update(batch), iters, dev)


def build(preset: str, switch: str, dev: str) -> TDMPCAgent:
    """A fresh agent with one switch set, its plan and update compiled (compile rows) before any timing."""
    agent = walker_agent(preset, dev, tuple(SWITCHES[switch]))
    agent.act(torch.randn(1, OBS, device=dev))
    agent.update(update_batch(dev))
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--switches", nargs="+", default=["eager"], choices=sorted(SWITCHES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="time every row this many times, alternating rows; report the mean")
    add_malloc_reuse(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.iters < 1:
        parser.error("--rounds and --iters must be at least 1")
    dev = args.device
    allocator = apply_malloc_reuse(args.malloc_reuse)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if dev.startswith('cuda') else f'cpu, {torch.get_num_threads()} threads'}; {allocator}")
    print(f"{'preset':>7} {'switch':>15} {'params':>10} {'plan ms/action':>15} {'x eager':>8} {'prior-only ms':>14} {'updates/s':>10} {'x eager':>8} {'plan MiB':>9} {'update MiB':>11}  update ms per round")
    # one unreported row first: the process's one-time costs (allocator, oneDNN primitive caches) made the
    # first row ~1.5x slower than the same row repeated at the end (docs/benchmarks.md)
    timings(build(args.presets[0], "eager", dev), dev, 2)
    for preset in args.presets:
        torch._dynamo.reset()
        switches = ["eager", *[s for s in args.switches if s != "eager"]]
        agents = {switch: build(preset, switch, dev) for switch in switches}  # all alive: rounds alternate rows
        rounds = {switch: [] for switch in switches}
        for _ in range(args.rounds):
            for switch, agent in agents.items():
                rounds[switch].append(timings(agent, dev, args.iters))
        obs, batch = torch.randn(1, OBS, device=dev), update_batch(dev)
        mib = {s: [peak_memory(f, dev) / 2**20 for f in (lambda a=a: a.act(obs), lambda a=a: a.update(batch))] for s, a in agents.items()}
        base = None
        for switch in switches:
            plan_s, prior_s, update_s = (sum(r[i] for r in rounds[switch]) / args.rounds for i in range(3))
            base = base or (plan_s, update_s)
            params = sum(p.numel() for p in agents[switch].parameters() if p.requires_grad)
            print(
                f"{preset:>7} {switch:>15} {params:>10,} {plan_s * 1e3:>15.1f} {base[0] / plan_s:>8.2f} "
                f"{prior_s * 1e3:>14.2f} {1 / update_s:>10.1f} {base[1] / update_s:>8.2f} {mib[switch][0]:>9.1f} {mib[switch][1]:>11.1f}  "
                + " ".join(f"{r[2] * 1e3:.0f}" for r in rounds[switch]), flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
