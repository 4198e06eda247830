"""TD-MPC2 agent speed: MPPI planning ms per action and updates/s, per model preset and fast-path switch.

Baselines in the same run: acting with the policy prior alone (no planning), and each preset's fp32
eager row for the switch rows. State task shapes (obs 24, action 6: walker-walk), TD-MPC2's planner
defaults, batch 256, horizon 3.

    python benchmarks/planning_latency.py [--presets 1m 5m] [--switches eager bf16 compile compile+bf16]
        [--device cpu] [--iters 10]
"""

from __future__ import annotations

import argparse

import torch
from timing import timed
from walker import OBS, update_batch, walker_agent

SWITCHES = {  # precision named in every row: the agent's default (auto) is not the baseline
    "eager": ["perf.precision=fp32"],
    "bf16": ["perf.precision=bf16"],
    "compile": ["perf.compile=true", "perf.precision=fp32"],
    "compile+bf16": ["perf.compile=true", "perf.precision=bf16"],
}


def measure(preset: str, switch: str, dev: str, iters: int) -> tuple[int, float, float, float]:
    """Params, plan s/action, prior-only s/action and s/update of one preset with one switch set."""
    torch._dynamo.reset()  # each row compiles afresh (compiled code is cached per function, across agents)
    agent = walker_agent(preset, dev, tuple(SWITCHES[switch]))
    obs = torch.randn(1, OBS, device=dev)
    agent.act(obs)  # compiles (compile rows) before the timed warm-up calls
    plan_s = timed(lambda: agent.act(obs, eval_mode=False), iters, dev)
    prior_s = timed(lambda: agent.act(obs, eval_mode=False, use_planner=False), iters, dev)
    batch = update_batch(dev)
    agent.update(batch)
    update_s = timed(lambda: agent.update(batch), iters, dev)
    return sum(p.numel() for p in agent.parameters() if p.requires_grad), plan_s, prior_s, update_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--switches", nargs="+", default=["eager"], choices=sorted(SWITCHES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if dev.startswith('cuda') else f'cpu, {torch.get_num_threads()} threads'}")
    print(f"{'preset':>7} {'switch':>13} {'params':>10} {'plan ms/action':>15} {'x eager':>8} {'prior-only ms':>14} {'updates/s':>10} {'x eager':>8}")
    # one unreported row first: the process's one-time costs (allocator, oneDNN primitive caches) made the
    # first row ~1.5x slower than the same row repeated at the end (docs/benchmarks.md)
    measure(args.presets[0], "eager", dev, 2)
    for preset in args.presets:
        base = None
        for switch in ["eager", *[s for s in args.switches if s != "eager"], "eager"]:  # the baseline first and last
            params, plan_s, prior_s, update_s = measure(preset, switch, dev, args.iters)
            base = base or (plan_s, update_s)
            print(
                f"{preset:>7} {switch:>13} {params:>10,} {plan_s * 1e3:>15.1f} {base[0] / plan_s:>8.2f} "
                f"{prior_s * 1e3:>14.2f} {1 / update_s:>10.1f} {base[1] / update_s:>8.2f}", flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
