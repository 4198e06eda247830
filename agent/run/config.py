"""Run-config checks done once, at start, before any work: the value rules and keys a job would ignore.

The rules (:func:`integer`, :func:`number`, :func:`choice`) say what a setting accepts; the typed
settings of :mod:`agent.run.settings` attach one to each field and report every value outside its
range at once. :func:`check_keys` compares a composed config with the job's own base config, so a
key the job would ignore (``+foo=1``, an experiment preset's key for the other job) is an error
instead of a silent no-op.
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
    """One of ``options`` (compared with ``==``; bools are not numbers here, and are named as a command
    line or YAML spells them: true, false)."""

    def rule(v: Any) -> str | None:
        ok = any(v == o and type(v) is type(o) for o in options)
        return None if ok else "one of " + ", ".join(str(o).lower() if isinstance(o, bool) else repr(o) for o in options)

    return rule


POSITIVE = number(0, lo_open=True)
NON_NEGATIVE = number(0)


def flat_items(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of a nested mapping with its value (an empty mapping counts as a leaf)."""
    if not isinstance(cfg, Mapping) or not cfg:
        return {prefix: cfg} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(flat_items(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def flat_keys(cfg: Any, prefix: str = "") -> set[str]:
    """Every dotted leaf key of a nested mapping (an empty mapping counts as a leaf)."""
    return set(flat_items(cfg, prefix))


PLUMBING = ("hydra.", "log.", "device", "threads", "malloc_reuse", "resume")  # where and how a run is run and logged, not what it trains
NOT_THE_PLAN = (*PLUMBING, "time_limit", "data.device")  # not worth a warning when a resume changes them


def changed_settings(saved: Mapping, now: Mapping) -> list[str]:
    """``key: old -> new`` for each setting of ``now`` that differs from ``saved`` (a checkpoint's config),
    logging, devices, threads and the time budget aside; keys ``saved`` lacks are not listed."""
    old, new = flat_items(saved), flat_items(now)
    return [
        f"{k}: {old[k]} -> {v}" for k, v in sorted(new.items())
        if k in old and old[k] != v and not k.startswith(NOT_THE_PLAN)
    ]  # fmt: skip


def check_keys(cfg: Mapping, base: Mapping, job: str) -> None:
    """Raise ``ValueError`` naming each key of ``cfg`` that ``base`` (the job's own config) lacks."""
    extra = sorted(k for k in flat_keys(cfg) - flat_keys(base) if not k.startswith("hydra."))
    if extra:
        raise ValueError(
            f"{', '.join(extra)}: not a setting of this job ({job}), so it would be ignored. "
            "Check the spelling, or the job (agent=pjepa: the representation job; agent=tdmpc2: online RL)"
        )
