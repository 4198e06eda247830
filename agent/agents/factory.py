"""Build the agent from a run config (Hydra ``instantiate`` is the registry of auxiliary tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agent.agents.pjepa import PJEPAAgent, UpdateConfig
from agent.agents.tdmpc import TDMPCAgent, TDMPCConfig
from agent.agents.update import ADAM_EPS
from agent.auxiliary import AuxTask
from agent.models.heads import discount_from_episode_length
from agent.models.tdmpc import TDMPCModel
from agent.models.world_model import WorldModel
from agent.run.checkpoint import (
    CheckpointError,
    check_signature,
    load_checkpoint,
    resolve_checkpoint,
)
from planner.mppi import MPPIConfig


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
        eps=float(c["optim"].get("eps", ADAM_EPS)),  # checkpoints from before optim.eps used Adam's default
        enc_lr_scale=float(c["optim"]["enc_lr_scale"]),
        grad_clip=float(c["optim"]["grad_clip"]),
        probe=bool(c["probe"]["enabled"]),
        probe_lr=float(c["probe"]["lr"]),
        probe_batch=int(c["probe"]["batch_size"]),
        precision=c["perf"]["precision"],
        channels_last=bool(c["perf"]["channels_last"]),
        compile=bool(c["perf"].get("compile", False)),
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


def episode_length(task: dict) -> int:
    """Agent steps per episode of a task config."""
    if task["suite"] == "counting":
        return int(task.get("max_steps", 4))
    if task["suite"] == "gym":
        from envs.gym import env_steps

        return env_steps(task) // int(task.get("action_repeat", 1))
    return int(task.get("episode_length", 1000)) // int(task.get("action_repeat", 1))


def build_tdmpc_agent(cfg: Any, obs_shape: tuple[int, ...], action_dim: int, device: str | torch.device = "cpu") -> TDMPCAgent:
    """The TD-MPC2 agent a run config describes (``cfg.agent`` holds the TD-MPC2 settings)."""
    c = to_dict(cfg)
    a, m = c["agent"], {k: v for k, v in c["model"].items() if k != "name"}
    wm = WorldModel(obs_shape=obs_shape, action_dim=action_dim, **m)
    model = TDMPCModel(
        wm, mlp_dim=m["mlp_dim"], num_q=a["num_q"], **two_hot(c), dropout=a["dropout"], episodic=c["task"]["suite"] == "counting",
    )  # fmt: skip
    aux = build_aux(c["aux"], wm.latent_dim, wm.obs_shape)
    update = TDMPCConfig(
        loss_scales={k: float(v) for k, v in a["loss_scales"].items()},
        routing=c["routing"], detach_target=bool(c["detach_target"]), rho=float(c["rho"]),
        discount=discount_from_episode_length(episode_length(c["task"])),
        lr=float(c["optim"]["lr"]), eps=float(c["optim"].get("eps", ADAM_EPS)), enc_lr_scale=float(a["enc_lr_scale"]), grad_clip=float(c["optim"]["grad_clip"]),
        pi_lr=float(a["pi_lr"]), entropy_coef=float(a["entropy_coef"]), tau=float(a["tau"]),
    )  # fmt: skip
    planner = MPPIConfig(horizon=int(a["horizon"]), gamma=update.discount, **a["planner"])
    return TDMPCAgent(model, aux, update, planner, seed=int(c["seed"])).to(device)


def tdmpc_signature(cfg: Any, obs_shape: tuple[int, ...], action_dim: int) -> dict:
    """What a TD-MPC2 checkpoint must agree on with the config that loads it."""
    c = to_dict(cfg)
    a = c["agent"]
    return {
        "obs_shape": list(obs_shape), "action_dim": action_dim, "model": c["model"], "aux": c["aux"],
        "agent": {"name": a["name"], "num_q": a["num_q"], **two_hot(c), "dropout": a["dropout"]},
    }  # fmt: skip


def two_hot(c: dict) -> dict:
    """``num_bins``, ``vmin``, ``vmax`` of the run's two-hot heads (``two_hot``; configs saved before it
    existed kept them under ``agent``)."""
    bins = c.get("two_hot") or c["agent"]
    return {k: bins[k] for k in ("num_bins", "vmin", "vmax")}


def load_online_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[TDMPCAgent, dict]:
    """A trained TD-MPC2 agent and its config from a run directory or checkpoint file."""
    ckpt = resolve_checkpoint(path)
    data = load_checkpoint(ckpt)
    sig, cfg = data["signature"], data["config"]
    if cfg.get("agent", {}).get("name") != "tdmpc2":
        raise CheckpointError(f"{ckpt} is not a TD-MPC2 (agent=tdmpc2) checkpoint")
    agent = build_tdmpc_agent(cfg, tuple(sig["obs_shape"]), int(sig["action_dim"]), device)
    try:
        agent.load_state_dict(data["agent"])
    except RuntimeError as err:
        raise CheckpointError(f"weights in {ckpt} do not fit its config: {err}") from err
    return agent, cfg


def load_pjepa_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[PJEPAAgent, dict, int, Path]:
    """A trained P-JEPA agent, its config, step and checkpoint file from a run directory or checkpoint."""
    ckpt = resolve_checkpoint(path)
    data = load_checkpoint(ckpt)
    cfg, sig = data["config"], data["signature"]
    if cfg.get("agent", {}).get("name", "pjepa") != "pjepa":
        raise CheckpointError(f"{ckpt} is a {cfg['agent']['name']!r} checkpoint; load it with agent.agents.factory.load_online_agent")
    try:
        agent = build_agent(cfg, tuple(sig["obs_shape"]), int(sig["action_dim"]), device)
    except KeyError as err:
        raise CheckpointError(f"the config saved in {ckpt} lacks {err} (made by an older version?)") from err
    check_signature(sig, signature(cfg, tuple(sig["obs_shape"]), int(sig["action_dim"])), ckpt)
    try:
        agent.load_state_dict(data["agent"])
    except RuntimeError as err:
        raise CheckpointError(f"weights in {ckpt} do not fit its config: {err}") from err
    return agent, cfg, int(data["step"]), ckpt
