"""Shared fixtures: a composed Hydra config with the tiny preset for fast runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

if TYPE_CHECKING:
    from agent.data.buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]

TINY = [  # both jobs
    "model=tiny",
    "batch_size=16",
    "data.buffer_size=5000",
    "log.every=3",
    "log.progress=false",
    "log.tensorboard=false",
    "perf.compile=false",  # the online job's default (auto) compiles on a CPU with a C++ compiler: ~1 min a run; tests that compile say so
]
TINY_PJEPA = [  # the representation job's own settings
    "steps=12",
    "data.num_envs=8",
    "data.seed_frames=400",
    "data.frames_per_collect=64",
    "data.collect_every=4",
    "probe.batch_size=8",
    "analysis.every=6",
    "analysis.num_obs=64",
    "analysis.heldout_num_obs=64",
    "checkpoint.every=6",
]


def compose_cfg(*overrides: str):
    """The run config as ``train.py`` would see it, with the tiny preset of its job and ``overrides``."""
    tiny = TINY if "agent=tdmpc2" in overrides else [*TINY, *TINY_PJEPA]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[*tiny, *overrides])


def metrics_rows(run_dir: Path) -> np.ndarray:
    """A run's ``metrics.csv`` rows ``[rows, columns]`` without its rate (``perf/updates_per_s`` or
    ``perf/env_steps_per_s``: wall time, the one column two runs of the same numbers differ in)."""
    path = Path(run_dir) / "metrics.csv"
    header = path.read_text().split("\n")[0].split(",")
    keep = [i for i, k in enumerate(header) if k not in ("perf/updates_per_s", "perf/env_steps_per_s")]
    return np.genfromtxt(path, delimiter=",", skip_header=1)[:, keep]


def same_batches(a: ReplayBuffer, b: ReplayBuffer, seed: int) -> bool:
    """Whether buffers ``a`` and ``b`` draw the same batch, key for key, from the same seed (``b``'s on any device)."""
    torch.manual_seed(seed)
    want = a.sample()
    torch.manual_seed(seed)
    got = b.sample()
    return want.keys() == got.keys() and all(torch.equal(want[key], got[key].cpu()) for key in want)


def plain_dicts(data: dict) -> dict:
    """A loaded checkpoint (nested :class:`agent.run.checkpoint.Checkpoint` dicts) as plain dicts, to edit and save again."""
    return {k: plain_dicts(v) if isinstance(v, dict) else v for k, v in data.items()}


@pytest.fixture
def tiny_cfg():
    return compose_cfg


@pytest.fixture
def compile_builds(monkeypatch):
    """For tests that stand in for ``torch.compile``: the probe says inductor builds here, on any machine,
    without compiling (``perf.compile=true`` would otherwise probe with the real one)."""
    import agent.agents.compiled

    monkeypatch.setattr(agent.agents.compiled, "_probe", lambda device: None)
