"""The runs of a sweep, read for the report: variant, seed, status, final metrics and learning curve.

A run directory is one with ``.hydra/config.yaml`` (what ``train.py`` writes, single run or one job
of a ``-m`` sweep). :func:`find_runs` walks the given paths for them and also reports the job
folders of a Hydra sweep that are not runs (a job that died before Hydra wrote its config) and
the job numbers missing from a sweep. :func:`read_run` never raises on a run's own files: a corrupt
or missing output makes the run ``failed`` or ``incomplete`` with the reason.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agent.run.config import PLUMBING
from agent.run.status import read_status
from envs import SUITES, success_on_termination

REPR_METRICS = ("heldout_centroid_acc", "heldout_knn_acc", "heldout_probe_acc", "distinct_counts", "kmeans_ari",
                "insample_centroid_acc", "encoding_size", "unhealthy_collapse", "consistency_residual", "aux_residual")  # fmt: skip
ONLINE_METRICS = ("return", "success")
# overrides that do not make a variant: the seed (the sweep's repeat axis), where / how a run logs,
# saves and is analysed along the way (the analysis runs on its own RNG; the final one is the same)
NOT_VARIANT = ("seed", *PLUMBING, "checkpoint.", "analysis.every")


@dataclass
class RunRecord:
    """One run as the report sees it. ``curve``: ``step`` and one metric (held-out centroid or eval return)."""

    path: Path
    status: str  # complete | incomplete | failed
    reason: str = ""
    kind: str = ""  # representation | online
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict)
    step: int | None = None

    @property
    def variant_overrides(self) -> tuple[str, ...]:
        return variant_of(self.overrides)


def variant_of(overrides: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The overrides that make a run's variant: all but the seed and the logging / location keys."""
    return tuple(o for o in overrides if not o.lstrip("+~").startswith(NOT_VARIANT))


def find_runs(paths: list[Path]) -> tuple[list[Path], list[RunRecord]]:
    """Run directories under ``paths`` (sorted), and records of sweep jobs that are no run (``failed``).

    ``ValueError`` when a path does not exist.
    """
    runs, broken = [], []
    for root in paths:
        if not root.exists():
            raise ValueError(f"{root} does not exist")
        if (root / ".hydra" / "config.yaml").is_file():
            runs.append(root)
            continue
        found = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml") if p.parent.parent != root)
        runs += found
        if (root / "multirun.yaml").is_file():  # a Hydra sweep: its job folders are <num>_<name>
            jobs = [p for p in root.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()]
            broken += [RunRecord(p, "failed", "no .hydra/config.yaml: the job died before Hydra wrote its config")
                       for p in sorted(jobs) if not any(f == p or p in f.parents for f in found)]  # fmt: skip
            nums = {int(p.name.split("_")[0]) for p in jobs}
            broken += [RunRecord(root / f"job {n}", "failed", "missing: no folder for this job number of the sweep")
                       for n in sorted(set(range(max(nums, default=-1) + 1)) - nums)]  # fmt: skip
    if not runs and not broken:
        raise ValueError(f"no run directories (with .hydra/config.yaml) under {[str(p) for p in paths]}")
    return sorted(set(runs)), broken


def _read_csv(path: Path, columns: tuple[str, ...]) -> dict[str, list[float]]:
    """``step`` and ``columns`` of a logger CSV, rows where the first column is set."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(columns[0])]
    return {"step": [float(r["step"]) for r in rows], **{c: [float(r.get(c) or "nan") for r in rows] for c in columns}}


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def read_run(path: Path) -> RunRecord:
    """A run's record; its status says what is missing (never raises on the run's own files)."""
    rec = RunRecord(path, "failed")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"))
        overrides = OmegaConf.load(path / ".hydra" / "overrides.yaml") if (path / ".hydra" / "overrides.yaml").is_file() else []
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as err:  # reported, never raised
        rec.reason = f"unreadable .hydra config: {type(err).__name__}: {err}"
        return rec
    rec.overrides, rec.seed = tuple(str(o) for o in overrides), cfg.get("seed")
    rec.kind = "online" if cfg.get("agent", {}).get("name") == "tdmpc2" else "representation"
    try:
        status = read_status(path)
    except ValueError as err:
        status = {"status": "failed", "reason": str(err)}
    try:
        if rec.kind == "representation":
            _read_representation(rec, cfg)
        else:
            _read_online(rec, cfg)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        rec.status, rec.reason = "failed", f"corrupt output: {type(err).__name__}: {err}"
        return rec
    if status is None:  # a run from before status.json: complete when its outputs say so
        return rec
    rec.step = status.get("step", rec.step)
    if status["status"] == "failed":
        rec.status, rec.reason = "failed", str(status.get("reason", "failed"))
    elif status["status"] == "running" and rec.status == "complete":
        rec.status, rec.reason = "incomplete", f"still running or killed (status.json says running) at step {rec.step}"
    elif status["status"] == "complete" and rec.final:  # e.g. ended by time_limit before its step target
        rec.status, rec.reason = "complete", ""
    return rec


def _read_representation(rec: RunRecord, cfg: dict) -> None:
    metrics_path = rec.path / "analysis" / "metrics.json"
    target = cfg.get("steps")
    if (rec.path / "repr.csv").is_file():
        rec.curve = _read_csv(rec.path / "repr.csv", ("repr/heldout_centroid_acc",))
    if not metrics_path.is_file():
        last = int(rec.curve["step"][-1]) if rec.curve.get("step") else None
        rec.status, rec.reason, rec.step = "incomplete", f"no final analysis (last analysed step {last} of {target})", last
        return
    metrics = json.loads(metrics_path.read_text())
    rec.final = {k: _number(metrics.get(k)) for k in REPR_METRICS}
    rec.step = int(metrics.get("final", {}).get("step", target or 0))
    rec.status = "complete"


def _read_online(rec: RunRecord, cfg: dict) -> None:
    eval_csv, target = rec.path / "eval.csv", cfg["agent"]["total_steps"]
    if not eval_csv.is_file():
        rec.status, rec.reason = "incomplete", f"no evaluation yet (eval.csv missing; target {target} steps)"
        return
    curve = _read_csv(eval_csv, ("eval/return", "eval/success"))
    if not curve["step"]:
        rec.status, rec.reason = "incomplete", f"no evaluation yet (eval.csv empty; target {target} steps)"
        return
    rec.curve = {"step": curve["step"], "eval/return": curve["eval/return"]}
    task = cfg.get("task")
    has_success = not isinstance(task, dict) or task.get("suite") not in SUITES or success_on_termination(task)
    # runs from before tasks declared their success logged a rate of 0 where none is defined: not a score
    rec.final = {"return": curve["eval/return"][-1], "success": curve["eval/success"][-1] if has_success else math.nan}
    rec.step = int(curve["step"][-1])
    if rec.step < target:  # a run evaluates at its last step: an earlier last evaluation was cut short
        rec.status, rec.reason = "incomplete", f"last evaluation at step {rec.step} of {target}"
    else:
        rec.status = "complete"


def variant_labels(records: list[RunRecord]) -> tuple[dict[Path, str], list[str]]:
    """Each run's variant label (its overrides less the seed, logging and those every run shares) and
    the shared overrides."""
    readable = [r for r in records if r.kind]
    common = set.intersection(*(set(r.variant_overrides) for r in readable)) if readable else set()
    labels = {r.path: " ".join(o for o in r.variant_overrides if o not in common) or "(baseline)" for r in readable}
    shared = [o for o in readable[0].variant_overrides if o in common] if readable else []
    return labels, shared
