"""Aggregates over seeds: point estimates with 95% stratified-bootstrap CIs (``rliable``), tables, curves.

Representation metrics are aggregated by their mean over seeds, planning returns and success by the
interquartile mean (IQM), the estimator ``rliable`` recommends for few runs. With one seed a variant
has its value and no interval.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agent.analysis.figures import save_figure
from agent.analysis.sweep import ONLINE_METRICS, REPR_METRICS, RunRecord

CURVE_COLUMN = {"representation": "repr/heldout_centroid_acc", "online": "eval/return"}
CURVE_LABEL = {"representation": "held-out nearest-centroid count accuracy", "online": "eval return (IQM)"}


@dataclass(frozen=True)
class Estimate:
    """One variant's aggregate of one metric over ``n`` seeds (``lo``/``hi``: 95% CI, NaN when n < 2)."""

    variant: str
    kind: str
    metric: str
    estimator: str
    n: int
    value: float
    lo: float
    hi: float

    def cell(self) -> str:
        if self.n == 0:
            return "-"
        return f"{self.value:.3g}" if self.n < 2 else f"{self.value:.3g} [{self.lo:.3g}, {self.hi:.3g}]"


def _estimator(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """``(runs, 1, ...)`` scores -> the aggregate per trailing index (mean or IQM over runs)."""
    from rliable import metrics

    agg = metrics.aggregate_iqm if name == "iqm" else metrics.aggregate_mean
    return lambda x: np.array([agg(x[..., i]) for i in range(x.shape[-1])])


def interval(scores: np.ndarray, estimator: str, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and 95% CI of ``scores`` ``(runs, points)`` over runs: ``(value, lo, hi)``, each ``(points,)``."""
    from rliable import library as rly

    x = np.asarray(scores, dtype=float)[:, None, :]  # (runs, tasks = 1, points)
    func = _estimator(estimator)
    if x.shape[0] < 2:
        value = func(x)
        return value, np.full_like(value, np.nan), np.full_like(value, np.nan)
    with warnings.catch_warnings():  # arch's notice that RandomState will give way to Generator
        warnings.simplefilter("ignore", FutureWarning)
        point, ci = rly.get_interval_estimates({"v": x}, func, reps=reps, random_state=np.random.RandomState(seed))
    return point["v"], ci["v"][0], ci["v"][1]


def estimates(records: list[RunRecord], labels: dict[Path, str], reps: int = 10_000, seed: int = 0) -> list[Estimate]:
    """Per variant (in first-seen order) and metric: mean (representation) or IQM (online) over complete runs."""
    out = []
    for kind, variant in _variants(records, labels):
        done = [r for r in records if labels.get(r.path) == variant and r.kind == kind and r.status == "complete"]
        metrics, estimator = (REPR_METRICS, "mean") if kind == "representation" else (ONLINE_METRICS, "iqm")
        for metric in metrics:
            vals = np.array([r.final.get(metric, np.nan) for r in done], dtype=float)
            vals = vals[np.isfinite(vals)]
            if not len(vals):
                out.append(Estimate(variant, kind, metric, estimator, 0, np.nan, np.nan, np.nan))
                continue
            value, lo, hi = interval(vals[:, None], estimator, reps, seed)
            out.append(Estimate(variant, kind, metric, estimator, len(vals), float(value[0]), float(lo[0]), float(hi[0])))
    return out


def _variants(records: list[RunRecord], labels: dict[Path, str]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in records:
        if r.path in labels and (r.kind, labels[r.path]) not in seen:
            seen.append((r.kind, labels[r.path]))
    return seen


def curve_bands(records: list[RunRecord], labels: dict[Path, str], reps: int = 2_000, seed: int = 0) -> dict[str, dict]:
    """``{kind: {variant: (steps, value, lo, hi)}}`` over the steps every complete seed of the variant logged."""
    bands: dict[str, dict] = {}
    for kind, variant in _variants(records, labels):
        runs = [r for r in records if labels.get(r.path) == variant and r.kind == kind and r.status == "complete" and r.curve]
        if not runs:
            continue
        steps = sorted(set.intersection(*(set(r.curve["step"]) for r in runs)))
        if not steps:
            continue
        col = CURVE_COLUMN[kind]
        scores = np.array([[dict(zip(r.curve["step"], r.curve[col]))[s] for s in steps] for r in runs])
        value, lo, hi = interval(scores, "mean" if kind == "representation" else "iqm", reps, seed)
        bands.setdefault(kind, {})[variant] = (np.array(steps), value, lo, hi)
    return bands


def plot_bands(bands: dict[str, dict], path: Path) -> Path:
    """One panel per kind: each variant's curve with its 95% CI band (shaded where there are >= 2 seeds)."""
    kinds = list(bands) or ["representation"]
    fig = Figure(figsize=(6.5 * len(kinds), 4.2))
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for variant, (steps, value, lo, hi) in bands.get(kind, {}).items():
            (line,) = ax.plot(steps, value, label=variant)
            if np.isfinite(lo).all():
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("updates" if kind == "representation" else "agent steps")
        ax.set_ylabel(CURVE_LABEL[kind])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def markdown(ests: list[Estimate], records: list[RunRecord], labels: dict[Path, str], shared: list[str]) -> str:
    """The report: one table per kind (variant x metric, CI in brackets), then every run not complete."""
    lines = [f"Shared overrides: `{' '.join(shared) or '(none)'}`", ""]
    for kind, title in (("representation", "Representation (mean over seeds, 95% bootstrap CI)"),
                        ("online", "Planning (IQM over seeds, 95% stratified bootstrap CI)")):  # fmt: skip
        rows = [e for e in ests if e.kind == kind]
        if not rows:
            continue
        metrics = list(dict.fromkeys(e.metric for e in rows))
        lines += [f"### {title}", "", "| variant | seeds done | " + " | ".join(metrics) + " |",
                  "|---|---:|" + "---:|" * len(metrics)]  # fmt: skip
        for variant in dict.fromkeys(e.variant for e in rows):
            cells = {e.metric: e for e in rows if e.variant == variant}
            runs = [r for r in records if labels.get(r.path) == variant and r.kind == kind]
            done = sum(r.status == "complete" for r in runs)
            lines.append(f"| {variant} | {done}/{len(runs)} | " + " | ".join(cells[m].cell() for m in metrics) + " |")
        lines.append("")
    bad = [r for r in records if r.status != "complete"]
    lines += [f"### Runs not complete: {len(bad)}", ""]
    lines += [f"- `{r.path}` ({r.status}): {r.reason}" for r in bad] or ["(none)"]
    return "\n".join(lines) + "\n"


def write_tables(ests: list[Estimate], records: list[RunRecord], labels: dict[Path, str], out: Path) -> None:
    """``report.csv`` (one row per variant and metric) and ``runs.csv`` (every run, its status and reason)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "report.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "kind", "metric", "estimator", "n", "value", "ci_low", "ci_high"])
        w.writerows([e.variant, e.kind, e.metric, e.estimator, e.n, e.value, e.lo, e.hi] for e in ests)
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "variant", "seed", "kind", "status", "step", "reason"])
        w.writerows([r.path, labels.get(r.path, ""), r.seed, r.kind, r.status, r.step, r.reason] for r in records)
