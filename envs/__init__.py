"""Environments: the counting task and the control suites (DMC, gymnasium), behind one ``make_env(cfg)``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from envs.gl import choose_gl_backend

choose_gl_backend()  # before torchrl (which may import mujoco) and dm_control are imported

from torchrl.envs import EnvBase  # noqa: E402

# suite name -> "module:function(task_cfg, *, num_envs, seed, device) -> EnvBase", imported lazily
SUITES: dict[str, str] = {
    "counting": "envs.counting:build",
    "dmc": "envs.dmc:build",
    "gym": "envs.gym:build",
}


def _plain(cfg: Any) -> dict:
    """A plain-dict copy of a DictConfig / mapping (never a view: make_env must not write into cfg)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a mapping config, got {type(cfg).__name__}")
    return dict(cfg)


def success_on_termination(task: Mapping) -> bool:
    """Whether an episode that ends by termination is a success, i.e. whether the task has a success rate.

    The counting task terminates when its target is reached; a gym task does when
    ``task.success_on_termination`` says so (goal tasks such as MountainCarContinuous-v0; others, e.g.
    Hopper, terminate by failing); DMC tasks never terminate. Tasks without one report no success rate.
    """
    suite = task.get("suite")
    if suite not in SUITES:
        raise ValueError(f"unknown task suite {suite!r}; available suites: {sorted(SUITES)}")
    return suite == "counting" or (suite == "gym" and bool(task.get("success_on_termination", False)))


def make_env(
    cfg: Any,
    *,
    num_envs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> EnvBase:
    """Build the environment a config describes.

    Args:
        cfg: the run config (``cfg.task`` with a ``suite`` key, plus optional ``seed``,
            ``num_envs`` and ``device``), or a task config alone (a mapping with ``suite``).
        num_envs, seed, device: override the config's values (e.g. for evaluation envs).

    Returns:
        a ready ``EnvBase`` whose specs describe its data; ``batch_size=(num_envs,)``.
    """
    root = _plain(cfg)
    task = root["task"] if "task" in root else root
    if not isinstance(task, Mapping) or "suite" not in task:
        raise ValueError(f"task config must have a 'suite' key (one of {sorted(SUITES)}), got {task!r}")
    suite = task["suite"]
    if suite not in SUITES:
        raise ValueError(f"unknown task suite {suite!r}; available suites: {sorted(SUITES)}")
    module, fn = SUITES[suite].split(":")
    build = getattr(importlib.import_module(module), fn)
    num_envs = int(num_envs if num_envs is not None else root.get("num_envs", 1))
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    seed = seed if seed is not None else root.get("seed")
    device = device if device is not None else root.get("device", "cpu")
    return build(dict(task), num_envs=num_envs, seed=seed, device=device)
