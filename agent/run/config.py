"""Run-config checks done once, at start, before any work: value ranges and keys a job would ignore.

:func:`check_values` range-checks every numeric setting either job reads (a value outside its range
is reported with what it must be; all of them at once). :func:`check_keys` compares a composed
config with the job's own base config, so a key the job would ignore (``+foo=1``, an experiment
preset's key for the other job) is an error instead of a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[Any], str | None]  # None when the value is fine, else what it must be


def integer(lo: int | None = None, hi: int | None = None, optional: bool = False) -> Rule:
    """An ``int`` (not a bool or float) in ``[lo, hi]``; ``None`` allowed when ``optional``."""

    def rule(v: Any) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)
        bounds = " and ".join(b for b in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if b)
        return None if ok else f"an integer {bounds}".strip() + (" or null" if optional else "")

    return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False, optional: bool = False) -> Rule:
    """A finite real number in the interval given by ``lo`` / ``hi`` (open ends where asked)."""

    def rule(v: Any) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
        parts = [f"{'>' if lo_open else '>='} {lo}" if lo is not None else "", f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""]
        return None if ok else "a number " + " and ".join(p for p in parts if p) + (" or null" if optional else "")

    return rule


def choice(*options: Any) -> Rule:
    """One of ``options`` (compared with ``==``; bools are not numbers here)."""

    def rule(v: Any) -> str | None:
        ok = any(v == o and type(v) is type(o) for o in options)
        return None if ok else "one of " + ", ".join(repr(o) for o in options)

    return rule


POSITIVE = number(0, lo_open=True)
NON_NEGATIVE = number(0)

#: Dotted key -> rule; ``*`` matches every key of that mapping. Keys absent from a config are skipped
#: (each job has its own keys; the aux, model and task groups check their own values when built).
RULES: dict[str, Rule] = {
    "seed": integer(0),
    "batch_size": integer(1),
    "threads": integer(1, optional=True),
    "time_limit": number(0, lo_open=True, optional=True),
    "rho": number(0, 1, lo_open=True),
    "steps": integer(1),
    "horizon": integer(1),
    "loss_scales.*": NON_NEGATIVE,
    "optim.lr": POSITIVE,
    "optim.eps": POSITIVE,
    "optim.enc_lr_scale": NON_NEGATIVE,
    "optim.grad_clip": POSITIVE,
    "data.num_envs": integer(1),
    "data.action_hold": integer(1),
    "data.seed_frames": integer(0),
    "data.frames_per_collect": integer(1),
    "data.collect_every": integer(1),
    "data.buffer_size": integer(1),
    "probe.lr": POSITIVE,
    "probe.batch_size": integer(1),
    "probe.every": integer(1),
    "analysis.every": integer(0),
    "log.every": integer(1),
    "perf.compile": choice(True, False),
    "perf.channels_last": choice(True, False),
    "perf.precision": choice("fp32", "bf16"),
    "log.tensorboard": choice(True, False),
    "log.progress": choice(True, False),
    "log.wandb": choice(True, False),
    "log.wandb_mode": choice("offline", "online"),
    "checkpoint.every": integer(1),
    "checkpoint.keep": integer(1),
    "task.episode_length": integer(1, optional=True),
    "task.action_repeat": integer(1),
    "agent.total_steps": integer(1),
    "agent.seed_steps": integer(0, optional=True),
    "agent.updates_per_step": integer(1),
    "agent.pretrain_updates": integer(0, optional=True),
    "agent.horizon": integer(1),
    "agent.num_q": integer(2),
    "agent.dropout": number(0, 1, hi_open=True),
    "two_hot.num_bins": integer(2),
    "two_hot.vmin": number(),
    "two_hot.vmax": number(),
    "agent.loss_scales.*": NON_NEGATIVE,
    "agent.enc_lr_scale": NON_NEGATIVE,
    "agent.pi_lr": POSITIVE,
    "agent.entropy_coef": NON_NEGATIVE,
    "agent.tau": number(0, 1, lo_open=True),
    "agent.eval_every": integer(1),
    "agent.eval_episodes": integer(1),
    "agent.planner.iterations": integer(1),
    "agent.planner.num_samples": integer(1),
    "agent.planner.num_elites": integer(1),
    "agent.planner.num_pi_trajs": integer(0),
    "agent.planner.temperature": POSITIVE,
    "agent.planner.min_std": POSITIVE,
    "agent.planner.max_std": POSITIVE,
}


def _lookup(cfg: Mapping, dotted: str) -> list[tuple[str, Any]]:
    """``(key, value)`` pairs a dotted rule key names in ``cfg`` (``*`` expands one mapping level)."""
    found = [("", cfg)]
    for part in dotted.split("."):
        nxt = []
        for prefix, node in found:
            if not isinstance(node, Mapping):
                continue
            keys = list(node) if part == "*" else [part] if part in node else []
            nxt += [(f"{prefix}.{k}" if prefix else str(k), node[k]) for k in keys]
        found = nxt
    return found


def check_values(cfg: Mapping) -> None:
    """Raise ``ValueError`` listing every setting outside its range (see :data:`RULES`)."""
    errors = []
    for dotted, rule in RULES.items():
        for key, value in _lookup(cfg, dotted):
            need = rule(value)
            if need:
                errors.append(f"{key}={value!r}: must be {need}")
    a, bins = cfg.get("agent", {}), cfg.get("two_hot", {})
    if isinstance(bins.get("vmin"), (int, float)) and isinstance(bins.get("vmax"), (int, float)) and not bins["vmin"] < bins["vmax"]:
        errors.append(f"two_hot.vmin={bins['vmin']!r}, two_hot.vmax={bins['vmax']!r}: need vmin < vmax")
    p = a.get("planner", {})
    if isinstance(p.get("num_elites"), int) and isinstance(p.get("num_samples"), int) and p["num_elites"] > p["num_samples"]:
        errors.append(f"agent.planner.num_elites={p['num_elites']}: must be <= agent.planner.num_samples={p['num_samples']}")
    if isinstance(p.get("min_std"), (int, float)) and isinstance(p.get("max_std"), (int, float)) and p["min_std"] > p["max_std"]:
        errors.append(f"agent.planner.min_std={p['min_std']}: must be <= agent.planner.max_std={p['max_std']}")
    if errors:
        raise ValueError("bad config values (nothing was run):\n  " + "\n  ".join(errors))


def flat_keys(cfg: Any, prefix: str = "") -> set[str]:
    """Every dotted leaf key of a nested mapping (an empty mapping counts as a leaf)."""
    if not isinstance(cfg, Mapping) or not cfg:
        return {prefix} if prefix else set()
    return set().union(*(flat_keys(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in cfg.items()))


def check_keys(cfg: Mapping, base: Mapping, job: str) -> None:
    """Raise ``ValueError`` naming each key of ``cfg`` that ``base`` (the job's own config) lacks."""
    extra = sorted(k for k in flat_keys(cfg) - flat_keys(base) if not k.startswith("hydra."))
    if extra:
        raise ValueError(
            f"{', '.join(extra)}: not a setting of this job ({job}), so it would be ignored. "
            "Check the spelling, or the job (agent=pjepa: the representation job; agent=tdmpc2: online RL)"
        )
