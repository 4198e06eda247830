"""Build the agent from a run config (Hydra ``instantiate`` is the registry of auxiliary tasks)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agent.agent import PJEPAAgent, UpdateConfig
from agent.auxiliary import AuxTask
from agent.world_model import WorldModel


def to_dict(cfg: Any) -> dict:
    """Resolved plain-dict copy of a DictConfig (or a dict)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def check_preset(cfg: Any) -> None:
    """An experiment preset (``experiment=<name>``) on a task it does not fit fails here, before any work."""
    c = to_dict(cfg)
    preset, task = c.get("preset") or {}, c["task"]
    suites = preset.get("suites")
    if suites and task["suite"] not in suites:
        raise ValueError(
            f"experiment={preset['name']} sets up the paper's pixel runs and fits task suites {suites}; "
            f"this run's task is {task['name']!r} (suite {task['suite']!r}): use task=counting or drop experiment={preset['name']}"
        )
    if suites and task.get("obs_type", "pixels") != "pixels":
        raise ValueError(f"experiment={preset['name']} needs pixel observations; this run has task.obs_type={task['obs_type']}")


def build_aux(aux_cfg: Any, latent_dim: int, obs_shape: tuple[int, ...]) -> AuxTask:
    """Instantiate the auxiliary task a ``configs/aux/*.yaml`` describes."""
    aux_cfg = to_dict(aux_cfg)
    target = aux_cfg.get("_target_")
    if not target:
        raise ValueError(f"aux config needs a '_target_' naming an AuxTask class, got {aux_cfg}")
    try:
        aux = instantiate(aux_cfg, latent_dim=latent_dim, obs_shape=tuple(obs_shape))
    except InstantiationException as err:
        raise ValueError(f"could not build auxiliary task {target!r}: {err}") from err
    if not isinstance(aux, AuxTask):
        raise TypeError(f"aux _target_ {target!r} built a {type(aux).__name__}, not an AuxTask")
    return aux


def update_config(cfg: Any) -> UpdateConfig:
    """The plain-valued :class:`UpdateConfig` from a run config."""
    c = to_dict(cfg)
    return UpdateConfig(
        routing=c["routing"],
        detach_target=bool(c["detach_target"]),
        rho=float(c["rho"]),
        loss_scales={k: float(v) for k, v in c["loss_scales"].items()},
        lr=float(c["optim"]["lr"]),
        enc_lr_scale=float(c["optim"]["enc_lr_scale"]),
        grad_clip=float(c["optim"]["grad_clip"]),
        probe=bool(c["probe"]["enabled"]),
        probe_lr=float(c["probe"]["lr"]),
        probe_batch=int(c["probe"]["batch_size"]),
        precision=c["perf"]["precision"],
        channels_last=bool(c["perf"]["channels_last"]),
    )


def build_agent(cfg: Any, obs_shape: tuple[int, ...], action_dim: int, device: str | torch.device = "cpu") -> PJEPAAgent:
    """World model (``cfg.model``), aux task (``cfg.aux``) and update settings -> agent on ``device``."""
    model_cfg = to_dict(cfg["model"])
    model_cfg.pop("name", None)
    try:
        wm = WorldModel(obs_shape=obs_shape, action_dim=action_dim, **model_cfg)
    except TypeError as err:
        raise ValueError(f"bad model preset {sorted(model_cfg)}: {err}") from err
    aux = build_aux(cfg["aux"], wm.latent_dim, wm.obs_shape)
    return PJEPAAgent(wm, aux, update_config(cfg)).to(device)


def signature(cfg: Any, obs_shape: tuple[int, ...], action_dim: int) -> dict:
    """What a checkpoint must agree on with the config that loads it."""
    c = to_dict(cfg)
    aux = {k: v for k, v in c["aux"].items() if k not in ("seed",)}
    return {
        "obs_shape": list(obs_shape),
        "action_dim": int(action_dim),
        "model": {k: v for k, v in c["model"].items() if k != "name"},
        "aux": aux,
        "probe": bool(c["probe"]["enabled"]),
    }
