"""Build, sign and load either agent from a run config (Hydra ``instantiate`` is the registry of auxiliary tasks).

The builders take the run's typed settings (:mod:`agent.run.settings`; a plain or Hydra config is
converted, and checked, on the way in), so every value they read is already of its type and range.
A checkpoint's saved config goes through the same conversion: one that no longer converts is a
:class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agent.agents.compiled import resolve_compile
from agent.agents.pjepa import PJEPAAgent, UpdateConfig
from agent.agents.tdmpc import TDMPCAgent, TDMPCConfig
from agent.agents.update import resolve_precision
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
from agent.run.settings import (
    JOBS,
    OnlineSettings,
    RepresentationSettings,
    RunSettings,
    load_settings,
)
from planner.mppi import MPPIConfig

Settings = TypeVar("Settings", RepresentationSettings, OnlineSettings)


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


def settings_of(cfg: Any, job: type[Settings]) -> Settings:
    """``cfg`` as ``job``'s typed settings (converted and range-checked unless it already is)."""
    s = cfg if isinstance(cfg, RunSettings) else load_settings(to_dict(cfg))
    if not isinstance(s, job):
        raise ValueError(f"this builder needs {job.__name__}, got the settings of another job ({type(s).__name__})")
    return s


def update_config(cfg: Any, device: str | torch.device) -> UpdateConfig:
    """The :class:`UpdateConfig` of a representation-job config (or its settings) on ``device``: ``auto``
    precision and compile resolved once, so the hot code gets fp32 | bf16 and compiles or not."""
    s = settings_of(cfg, RepresentationSettings)
    dev = torch.device(device)
    o, p = s.optim, s.probe
    return UpdateConfig(
        routing=s.routing, detach_target=s.detach_target, rho=s.rho, loss_scales=dict(s.loss_scales),
        lr=o.lr, eps=o.eps, enc_lr_scale=o.enc_lr_scale, grad_clip=o.grad_clip,
        probe=p.enabled, probe_lr=p.lr, probe_batch=p.batch_size,
        precision=resolve_precision(s.perf.precision, dev), channels_last=s.perf.channels_last, compile=resolve_compile(s.perf.compile, dev, s.perf.compile_mode),
        compile_mode=s.perf.compile_mode, fused_adam=s.perf.fused_adam,
    )  # fmt: skip


def build_world_model(model: dict, obs_shape: tuple[int, ...], action_dim: int) -> WorldModel:
    """The world model a ``configs/model/*.yaml`` preset describes (its ``name`` is a label)."""
    kwargs = {k: v for k, v in model.items() if k != "name"}
    try:
        return WorldModel(obs_shape=obs_shape, action_dim=action_dim, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad model preset {sorted(kwargs)}: {err}") from err


def build_agent(cfg: Any, obs_shape: tuple[int, ...], action_dim: int, device: str | torch.device = "cpu") -> PJEPAAgent:
    """World model (``model``), aux task (``aux``) and update settings -> agent on ``device``.

    ``cfg``: a representation-job config or its :class:`RepresentationSettings`.
    """
    s = settings_of(cfg, RepresentationSettings)
    wm = build_world_model(s.model, obs_shape, action_dim)
    aux = build_aux(s.aux, wm.latent_dim, wm.obs_shape)
    return PJEPAAgent(wm, aux, update_config(s, device)).to(device)


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
    """The TD-MPC2 agent an online-job config (or its :class:`OnlineSettings`) describes."""
    s = settings_of(cfg, OnlineSettings)
    a, bins = s.agent, s.two_hot
    wm = build_world_model(s.model, obs_shape, action_dim)
    model = TDMPCModel(
        wm, mlp_dim=s.model["mlp_dim"], num_q=a.num_q, num_bins=bins.num_bins, vmin=bins.vmin, vmax=bins.vmax,
        dropout=a.dropout, episodic=s.task["suite"] == "counting",
    )  # fmt: skip
    aux = build_aux(s.aux, wm.latent_dim, wm.obs_shape)
    update = TDMPCConfig(
        loss_scales=dict(a.loss_scales), routing=s.routing, detach_target=s.detach_target, rho=s.rho,
        discount=discount_from_episode_length(episode_length(s.task)),
        lr=s.optim.lr, eps=s.optim.eps, enc_lr_scale=a.enc_lr_scale, grad_clip=s.optim.grad_clip,
        pi_lr=a.pi_lr, entropy_coef=a.entropy_coef, tau=a.tau, compile_mode=s.perf.compile_mode, fused_adam=s.perf.fused_adam,
        compile=resolve_compile(s.perf.compile, torch.device(device), s.perf.compile_mode),  # auto, once: hot code compiles or not
        precision=resolve_precision(s.perf.precision, torch.device(device)),  # and gets fp32 | bf16
    )  # fmt: skip
    planner = MPPIConfig(horizon=a.horizon, gamma=update.discount, **asdict(a.planner))
    return TDMPCAgent(model, aux, update, planner, seed=s.seed).to(device)


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


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SHAPING = ("model", "aux", "task")  # never filled from today's defaults: they decide what the weights mean


def job_defaults(job: str) -> dict:
    """Today's default config of ``agent=<job>`` (plain, resolved), composed from ``configs/``.

    Without the task recipe: a setting an older run lacks is the job's neutral default (what the code
    did before the setting existed: a constant rate, fp32), not a tuned value it never ran with.
    """
    overrides = [f"agent={job}", "~recipe@_global_"]
    if GlobalHydra.instance().is_initialized():  # inside train.py's Hydra app: the same config dir
        return to_dict(compose(config_name="config", overrides=overrides))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return to_dict(compose(config_name="config", overrides=overrides))


def fill_missing(saved: dict, defaults: dict) -> dict:
    """``saved`` with the keys it lacks taken from ``defaults``, recursively (saved values always win)."""
    out = dict(saved)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = fill_missing(out[k], v)
    return out


def saved_settings(cfg: dict, ckpt: Path, job: type[Settings]) -> Settings:
    """The typed settings of a config saved in ``ckpt`` by this or an older version.

    Older configs are brought up to date first: the bins under ``agent`` move to ``two_hot`` (TD-MPC2
    configs before it existed), ``data.action_repeat`` becomes ``data.action_hold`` (its old name), and
    settings added since (``threads``, ``log.wandb``, ``optim.eps``, ...) take today's defaults. The groups
    that decide what the weights mean (``model``, ``aux``, ``task``; the TD-MPC2 bins) are never filled.
    """
    name = next(n for n, cls in JOBS.items() if cls is job)
    cfg = {**cfg, "agent": {"name": name, **(cfg.get("agent") or {})}}  # the representation job's once had none
    if "two_hot" not in cfg and all(k in cfg["agent"] for k in ("num_bins", "vmin", "vmax")):
        cfg["two_hot"] = two_hot(cfg)
    data = cfg.get("data") or {}
    if "action_repeat" in data and "action_hold" not in data:
        cfg["data"] = {"action_hold": data["action_repeat"], **{k: v for k, v in data.items() if k != "action_repeat"}}
    keep = SHAPING + (("two_hot",) if job is OnlineSettings else ())
    defaults = {k: v for k, v in job_defaults(name).items() if k not in keep}
    try:
        return settings_of(fill_missing(cfg, defaults), job)
    except ValueError as err:
        raise CheckpointError(f"the config saved in {ckpt} does not convert: {err}") from err


def load_weights(agent: torch.nn.Module, state: dict, ckpt: Path) -> None:
    """Load ``state`` into ``agent``; weights that do not fit its config are a :class:`CheckpointError`."""
    try:
        agent.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {ckpt} do not fit its config: {err}") from err


def load_online_agent(path: str | Path, device: str | torch.device = "cpu", perf_compile: bool | str | None = None) -> tuple[TDMPCAgent, dict]:
    """A trained TD-MPC2 agent and its config from a run directory or checkpoint file.

    ``perf_compile``: this machine's ``perf.compile`` for the loaded agent's planner; None: the run's own
    (``auto`` for runs saved before the setting existed, today's default), a ``true`` read as ``auto``
    (the checkpoint may have moved to a machine where torch.compile cannot build), in the default mode.
    """
    ckpt = resolve_checkpoint(path)
    data = load_checkpoint(ckpt)
    sig, cfg = data["signature"], data["config"]
    if cfg.get("agent", {}).get("name") != "tdmpc2":
        raise CheckpointError(f"{ckpt} is not a TD-MPC2 (agent=tdmpc2) checkpoint")
    s = saved_settings(cfg, ckpt, OnlineSettings)
    asked = ("auto" if s.perf.compile is True else s.perf.compile) if perf_compile is None else perf_compile
    s = replace(s, perf=replace(s.perf, compile=asked, compile_mode="default"))
    agent = build_tdmpc_agent(s, tuple(sig["obs_shape"]), int(sig["action_dim"]), device)
    load_weights(agent, data["agent"], ckpt)
    return agent, cfg


def load_pjepa_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[PJEPAAgent, dict, int, Path]:
    """A trained P-JEPA agent, its config, step and checkpoint file from a run directory or checkpoint
    (uncompiled, whatever the run's ``perf.compile``: it is loaded to encode, not to train)."""
    ckpt = resolve_checkpoint(path)
    data = load_checkpoint(ckpt)
    cfg, sig = data["config"], data["signature"]
    if cfg.get("agent", {}).get("name", "pjepa") != "pjepa":
        raise CheckpointError(f"{ckpt} is a {cfg['agent']['name']!r} checkpoint; load it with agent.agents.factory.load_online_agent")
    s = saved_settings(cfg, ckpt, RepresentationSettings)
    agent = build_agent(replace(s, perf=replace(s.perf, compile=False, compile_mode="default")), tuple(sig["obs_shape"]), int(sig["action_dim"]), device)
    check_signature(sig, signature(cfg, tuple(sig["obs_shape"]), int(sig["action_dim"])), ckpt)
    load_weights(agent, data["agent"], ckpt)
    return agent, cfg, int(data["step"]), ckpt
