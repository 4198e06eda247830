"""TD-MPC2 agent speed: MPPI planning ms per action and updates/s, per model preset.

Baseline in the same run: acting with the policy prior alone (no planning). State task shapes
(obs 24, action 6: walker-walk), TD-MPC2's planner defaults, batch 256, horizon 3.

    python benchmarks/planning_latency.py [--presets 1m 5m] [--device cpu] [--iters 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from timing import timed

from agent.agents.factory import build_tdmpc_agent

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT, H, B = 24, 6, 3, 256



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if dev.startswith('cuda') else f'cpu, {torch.get_num_threads()} threads'}")
    print(f"{'preset':>7} {'params':>10} {'plan ms/action':>15} {'prior-only ms':>14} {'updates/s':>10}")
    for preset in args.presets:
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=["agent=tdmpc2", "task=dmc/walker-walk", "aux=none", f"model={preset}", f"device={dev}"])
        torch.manual_seed(0)
        agent = build_tdmpc_agent(cfg, (OBS,), ACT, dev)
        obs = torch.randn(1, OBS, device=dev)
        plan_s = timed(lambda: agent.act(obs, eval_mode=False), args.iters, dev)
        prior_s = timed(lambda: agent.act(obs, eval_mode=False, use_planner=False), args.iters, dev)
        batch = {
            "obs": torch.randn(H + 1, B, OBS, device=dev),
            "action": torch.rand(H, B, ACT, device=dev) * 2 - 1,
            "reward": torch.rand(H, B, 1, device=dev),
            "terminated": torch.zeros(H, B, 1, device=dev),
        }
        update_s = timed(lambda: agent.update(batch), args.iters, dev)
        params = sum(p.numel() for p in agent.parameters() if p.requires_grad)
        print(f"{preset:>7} {params:>10,} {plan_s * 1e3:>15.1f} {prior_s * 1e3:>14.2f} {1 / update_s:>10.1f}")


if __name__ == "__main__":
    main()
