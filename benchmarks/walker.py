"""The TD-MPC2 benchmarks' fixed shapes (walker-walk: obs 24, action 6; batch 256, horizon 3) and agent."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from agent.agents.factory import build_tdmpc_agent
from agent.agents.tdmpc import TDMPCAgent

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT, H, B = 24, 6, 3, 256


def walker_agent(preset: str, dev: str = "cpu", overrides: tuple[str, ...] = ()) -> TDMPCAgent:
    """A fresh TD-MPC2 agent (``model=<preset>``, no aux, seed 0) on walker-walk's shapes; eager with Adam's
    multi-tensor form, the baseline, unless ``overrides`` say ``perf.compile=true`` / ``perf.fused_adam=true`` (the
    job's defaults, auto and true, would compile on a CPU with a C++ compiler and step the fused kernel)."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        base = ["agent=tdmpc2", "task=dmc/walker-walk", "aux=none", f"model={preset}", f"device={dev}", "perf.compile=false", "perf.fused_adam=false"]
        cfg = compose("config", overrides=[*base, *overrides])
    torch.manual_seed(0)
    return build_tdmpc_agent(cfg, (OBS,), ACT, dev)


def update_batch(dev: str = "cpu") -> dict[str, torch.Tensor]:
    """One fixed random training batch, time-major: obs ``[H+1, B, OBS]``, the rest ``[H, B, ...]``."""
    return {
        "obs": torch.randn(H + 1, B, OBS, device=dev),
        "action": torch.rand(H, B, ACT, device=dev) * 2 - 1,
        "reward": torch.rand(H, B, 1, device=dev),
        "terminated": torch.zeros(H, B, 1, device=dev),
    }
