"""The run's settings as typed dataclasses, one docstring per field, converted once at start.

:func:`load_settings` turns a composed run config (a plain dict, as :func:`agent.agents.factory.to_dict`
gives it) into :class:`RepresentationSettings` (``agent=pjepa``) or :class:`OnlineSettings`
(``agent=tdmpc2``): every value type- and range-checked, all problems reported at once, before any
work. The job code then reads typed attributes (``s.data.num_envs``) instead of casting string-keyed
values. The groups whose keys depend on the choice (``task``, ``model``, ``aux``) stay plain mappings:
their builders check them (a few shared task keys are checked here). A key the job would ignore is
refused by :func:`agent.run.config.check_keys`; the defaults and the users' comments stay in
``configs/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, get_type_hints

from agent.agents.compiled import COMPILE_CHOICES, COMPILE_MODES
from agent.agents.update import ADAM_EPS, LR_SCHEDULES, PRECISIONS
from agent.run.config import NON_NEGATIVE, POSITIVE, Rule, choice, integer, number

BOOL = choice(True, False)
T = TypeVar("T")


def setting(doc: str, rule: Rule | None = None, default: Any = MISSING, each: Rule | None = None, keys: Mapping[str, Rule] | None = None) -> Any:
    """A field: ``doc`` (what it means), ``rule`` (the values it accepts), an optional ``default``
    (for checkpoints written before the field existed); ``each`` / ``keys`` check the values of a
    mapping-valued field (every value / the named keys when present)."""
    return field(default=default, metadata={"doc": doc, "rule": rule, "each": each, "keys": keys or {}})


def section(doc: str, default: Any = MISSING) -> Any:
    """A nested group of settings (its type is a settings dataclass); ``default`` for configs saved before it existed."""
    return field(default=default, metadata={"doc": doc})


# ------------------------------------------------------------------------------ shared sections
@dataclass(frozen=True, kw_only=True)
class TwoHot:
    num_bins: int = setting("bins of every distributional head (reward aux, TD-MPC2 reward and Q)", integer(2))
    vmin: float = setting("lowest bin, in symlog space", number())
    vmax: float = setting("highest bin, in symlog space", number())

    def problems(self) -> list[str]:
        return [] if self.vmin < self.vmax else [f"two_hot.vmin={self.vmin!r}, two_hot.vmax={self.vmax!r}: need vmin < vmax"]


@dataclass(frozen=True, kw_only=True)
class Optim:
    lr: float = setting("Adam learning rate of the world model (and aux head)", POSITIVE)
    eps: float = setting("Adam's epsilon", POSITIVE, default=ADAM_EPS)
    grad_clip: float = setting("max global gradient norm", POSITIVE)


@dataclass(frozen=True, kw_only=True)
class Data:
    action_hold: int = setting("env steps each random action is held", integer(1))
    hold_across_resets: bool = setting("the hold runs on across episode ends (the reference code)", BOOL)
    buffer_size: int = setting("replay capacity in transitions", integer(1))
    device: str = setting("where the replay buffer stores (and the counting env renders)")


@dataclass(frozen=True, kw_only=True)
class Log:
    every: int = setting("steps between metric rows", integer(1))
    tensorboard: bool = setting("also write TensorBoard events", BOOL)
    progress: bool = setting("show a progress bar", BOOL)
    wandb: bool = setting("also log to Weights & Biases", BOOL)
    wandb_mode: str = setting("W&B mode", choice("offline", "online"))
    wandb_project: str = setting("W&B project name")


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    keep: int = setting("step checkpoints kept besides last.pt", integer(1))


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What both jobs read."""

    seed: int = setting("seed of everything random", integer(0))
    device: str = setting("cpu | cuda | cuda:<n>")
    threads: int | None = setting("torch's CPU threads; null: torch's default", integer(1, optional=True))
    malloc_reuse: bool = setting("keep freed blocks up to 1 GiB in the process (glibc's mallopt): fewer page faults, same numbers", BOOL, default=True)
    batch_size: int = setting("sequences per update", integer(1))
    time_limit: float | None = setting("minutes of wall time for this invocation's loop", number(0, lo_open=True, optional=True))
    routing: str = setting("joint | separate | aux_only (checked by the loss)")
    detach_target: bool = setting("stop-gradient on the dynamics target", BOOL)
    rho: float = setting("per-step weight rho^t of the latent rollout", number(0, 1, lo_open=True))
    resume: bool = setting("continue from the run dir's newest checkpoint", BOOL)
    two_hot: TwoHot = section("bins of the distributional heads")
    optim: Optim = section("the world model's optimiser")
    data: Data = section("replay buffer and random-action collection")
    log: Log = section("metric logging")
    checkpoint: Checkpoint = section("checkpoint rotation")
    task: dict = setting("the task group (checked by the env builder)", keys={"episode_length": integer(1, optional=True), "action_repeat": integer(1)})
    model: dict = setting("the model preset (checked by the world model)")
    aux: dict = setting("the aux target (instantiated and checked when built)")
    preset: dict = setting("the experiment preset's name and suites (checked at start)")


# ------------------------------------------------------------------------------ representation job
@dataclass(frozen=True, kw_only=True)
class RepOptim(Optim):
    enc_lr_scale: float = setting("encoder learning-rate multiplier", NON_NEGATIVE)
    schedule: str = setting(
        "constant | cosine (to min_lr_scale x lr at the last of `steps`) | step (min_lr_scale x lr from update drop_at on)",
        choice(*LR_SCHEDULES), default="constant",
    )  # fmt: skip
    min_lr_scale: float = setting("the cosine schedule's final multiplier, the step schedule's after the drop", number(0, 1), default=0.1)
    drop_at: int | None = setting("the update where the step schedule drops the rate (>= steps: the run ends before it)", integer(1, optional=True), default=None)

    def problems(self) -> list[str]:
        if self.schedule == "step" and self.drop_at is None:
            return ["optim.schedule=step needs optim.drop_at (the update where the rate drops)"]
        if self.schedule != "step" and self.drop_at is not None:
            return [f"optim.drop_at={self.drop_at}: only optim.schedule=step reads it (this run: {self.schedule}; add optim.drop_at=null)"]
        return []


@dataclass(frozen=True, kw_only=True)
class RepData(Data):
    num_envs: int = setting("batched envs collecting random-action data", integer(1))
    seed_frames: int = setting("transitions collected before the first update", integer(0))
    frames_per_collect: int = setting("transitions per collection", integer(1))
    collect_every: int = setting("updates between collections", integer(1))
    workers: int = setting(
        "processes collecting beside the updates (counting task; the same data, split by env); 0: in this process",
        integer(0), default=0,
    )  # fmt: skip

    def problems(self) -> list[str]:
        if self.workers > self.num_envs:
            return [f"data.workers={self.workers}: at most data.num_envs={self.num_envs} (each worker collects whole envs)"]
        return []


@dataclass(frozen=True, kw_only=True)
class RepCheckpoint(Checkpoint):
    every: int = setting("updates between checkpoints", integer(1))


@dataclass(frozen=True, kw_only=True)
class Perf:
    precision: str = setting("fp32 | bf16 | auto (bf16 where the device has native bf16, else fp32): autocast of the forward passes", choice(*PRECISIONS), default="fp32")
    compile: bool | str = setting(
        "torch.compile (representation job: the update's loss; online job: the update's two losses and the planner's prior "
        "rollout and iterations): true | false | auto (on a CPU where inductor builds; elsewhere eager)",
        choice(*COMPILE_CHOICES), default=False,
    )  # fmt: skip
    compile_mode: str = setting("torch.compile's mode when compiling (reduce-overhead, max-autotune: CUDA graphs on a GPU)", choice(*COMPILE_MODES), default="default")
    fused_adam: bool = setting("Adam's fused kernel (CPU and CUDA) instead of its multi-tensor form: the same maths, rounded differently", BOOL, default=False)

    def problems(self) -> list[str]:
        if self.compile_mode != "default" and self.compile is False:
            return [f"perf.compile_mode={self.compile_mode}: only perf.compile=true (or auto) reads it (add perf.compile=true)"]
        return []


@dataclass(frozen=True, kw_only=True)
class RepPerf(Perf):
    channels_last: bool = setting("channels-last conv weights and frames", BOOL)


@dataclass(frozen=True, kw_only=True)
class Probe:
    enabled: bool = setting("train the decoder probe on detached latents", BOOL)
    lr: float = setting("the probe's learning rate", POSITIVE)
    batch_size: int = setting("samples of each batch the probe sees", integer(1))
    every: int = setting("train the probe every n-th update", integer(1))


@dataclass(frozen=True, kw_only=True)
class Analysis:
    every: int = setting("updates between analyses; 0: only at the start and end", integer(0))
    num_obs: int = setting("monitoring observations (figures, in-sample metrics, classifier fit)", integer(1))
    seed: int = setting("seed of the monitoring set", integer(0))
    heldout_num_obs: int = setting("held-out observations the classifiers are scored on", integer(1))
    heldout_seed: int = setting("seed of the held-out set", integer(0))


@dataclass(frozen=True, kw_only=True)
class RepresentationSettings(RunSettings):
    """``agent=pjepa``: the P-JEPA world model trained on random-action data, analysed as it trains."""

    steps: int = setting("gradient updates", integer(1))
    horizon: int = setting("latent rollout length of L_dyn", integer(1))
    loss_scales: dict[str, float] = setting("weights of L_dyn (dyn) and L_p (aux, the paper's c_p)", each=NON_NEGATIVE)
    optim: RepOptim = section("the world model's optimiser")
    data: RepData = section("replay buffer and random-action collection")
    checkpoint: RepCheckpoint = section("checkpoint interval and rotation")
    perf: RepPerf = section("fast paths of the update")
    probe: Probe = section("decoder probe")
    analysis: Analysis = section("monitoring and held-out sets")
    agent: dict = setting("the job's name")

    def problems(self) -> list[str]:
        suite = self.task.get("suite")
        if self.data.workers and suite != "counting":
            return [
                f"data.workers={self.data.workers}: workers split the counting task's envs (each env its own random stream, so "
                f"the split gives the same data); task suite {suite!r} collects in this process (data.workers=0)"
            ]
        return []


# ------------------------------------------------------------------------------ online job
@dataclass(frozen=True, kw_only=True)
class Planner:
    iterations: int = setting("MPPI iterations per action", integer(1))
    num_samples: int = setting("action sequences sampled per iteration", integer(1))
    num_elites: int = setting("elites refitting the sampling distribution", integer(1))
    num_pi_trajs: int = setting("sequences from the policy prior", integer(0))
    temperature: float = setting("softmax temperature of the elite weights", POSITIVE)
    min_std: float = setting("lowest sampling std", POSITIVE)
    max_std: float = setting("initial (highest) sampling std", POSITIVE)

    def problems(self) -> list[str]:
        out = []
        if self.num_elites > self.num_samples:
            out.append(f"agent.planner.num_elites={self.num_elites}: must be <= agent.planner.num_samples={self.num_samples}")
        if self.min_std > self.max_std:
            out.append(f"agent.planner.min_std={self.min_std}: must be <= agent.planner.max_std={self.max_std}")
        return out


@dataclass(frozen=True, kw_only=True)
class Agent:
    name: str = setting("the job: tdmpc2")
    total_steps: int = setting("env steps", integer(1))
    seed_steps: int | None = setting("random-action steps before planning; null: max(1000, 5 x episode length)", integer(0, optional=True))
    updates_per_step: int = setting("updates per env step", integer(1))
    pretrain_updates: int | None = setting("updates when the seed steps end; null: seed_steps", integer(0, optional=True))
    horizon: int = setting("model horizon of the losses and the planner", integer(1))
    num_q: int = setting("Q ensemble size", integer(2))
    dropout: float = setting("dropout of the Q heads", number(0, 1, hi_open=True))
    loss_scales: dict[str, float] = setting("weights of dyn, aux, reward, value, termination", each=NON_NEGATIVE)
    enc_lr_scale: float = setting("encoder learning-rate multiplier", NON_NEGATIVE)
    pi_lr: float = setting("policy prior's learning rate", POSITIVE)
    entropy_coef: float = setting("policy prior's entropy bonus", NON_NEGATIVE)
    tau: float = setting("Polyak rate of the target Q ensemble", number(0, 1, lo_open=True))
    collect: str = setting("planner | random (counting: the paper's random-action data)", choice("planner", "random"))
    eval_every: int = setting("env steps between evaluations (and checkpoints)", integer(1))
    eval_episodes: int = setting("episodes per evaluation", integer(1))
    planner: Planner = section("MPPI")


@dataclass(frozen=True, kw_only=True)
class OnlineSettings(RunSettings):
    """``agent=tdmpc2``: TD-MPC2-style online RL on the P-JEPA world model, planning with MPPI."""

    agent: Agent = section("the online agent")
    perf: Perf = section("fast paths of the update and the planner", default=Perf())


JOBS: dict[str, type[RunSettings]] = {"pjepa": RepresentationSettings, "tdmpc2": OnlineSettings}


# ------------------------------------------------------------------------------ conversion
def _convert(cls: type[T], data: Mapping, prefix: str, errors: list[str]) -> T | None:
    """``data`` -> ``cls``, appending what is wrong to ``errors`` (None when anything is)."""
    hints, kwargs, before = get_type_hints(cls), {}, len(errors)
    for f in fields(cls):
        key, typ = f"{prefix}{f.name}", hints[f.name]
        if f.name not in data:
            if f.default is MISSING:
                errors.append(f"{key}: missing")
            continue
        value = data[f.name]
        if is_dataclass(typ):
            if not isinstance(value, Mapping):
                errors.append(f"{key}={value!r}: must be a group of settings")
                continue
            kwargs[f.name] = _convert(typ, value, f"{key}.", errors)
            continue
        m = f.metadata
        if m["each"] or m["keys"]:
            if not isinstance(value, Mapping):
                errors.append(f"{key}={value!r}: must be a mapping")
                continue
            checks = [(k, m["each"]) for k in value] if m["each"] else [(k, r) for k, r in m["keys"].items() if k in value]
            errors += [f"{key}.{k}={value[k]!r}: must be {need}" for k, rule in checks if (need := rule(value[k]))]
        elif m["rule"] and (need := m["rule"](value)):
            errors.append(f"{key}={value!r}: must be {need}")
        kwargs[f.name] = value
    if len(errors) > before:
        return None
    out = cls(**kwargs)
    errors += out.problems() if hasattr(out, "problems") else []
    return out


def load_settings(cfg: Mapping) -> RepresentationSettings | OnlineSettings:
    """The typed settings of a run config's job (``agent.name``).

    Raises:
        ValueError: every setting that is missing or outside its range, listed at once
            ("bad config values (nothing was run)"), or an unknown job.
    """
    name = (cfg.get("agent") or {}).get("name")
    if name not in JOBS:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(JOBS)}")
    errors: list[str] = []
    out = _convert(JOBS[name], cfg, "", errors)
    if errors:
        raise ValueError("bad config values (nothing was run):\n  " + "\n  ".join(errors))
    return out


def documented(cls: type) -> dict[str, str]:
    """Dotted field name -> its docstring, for every field of a settings class (nested included)."""
    out: dict[str, str] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        out[f.name] = f.metadata.get("doc", "")
        if is_dataclass(hints[f.name]):
            out.update({f"{f.name}.{k}": v for k, v in documented(hints[f.name]).items()})
    return out
