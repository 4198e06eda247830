"""Learning curves of runs: ``python -m agent.curves RUN_DIR [RUN_DIR ...] [out=curves.png] [repr=true]``.

Keys: ``out`` (default ``curves.png``), ``metric`` (``return`` | ``success``), ``labels`` (comma-separated,
one per run), ``repr`` (``true`` | ``false``). ``repr=true``: representation runs (the counting job): each run's ``repr.csv`` (or, when the curve was
rebuilt by ``python -m agent.analyze checkpoints=all``, ``analysis/repr.csv``) as count accuracies,
count clusters and encoding size against updates, beside the reference code's curve; also prints
a Markdown table of each run's final and best (by held-out centroid accuracy) metrics.

Otherwise online runs: reads each run's ``eval.csv`` (evaluation with the planner) and ``episodes.csv`` (training episode
returns, with exploration) and plots them against env steps (agent steps x the task's action repeat,
read from the run's ``.hydra/config.yaml`` when present). ``metric=success`` plots the eval success
rate instead of the return (tasks that have one: counting, gym with ``task.success_on_termination=true``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from agent.analysis.figures import save_figure
from agent.cli import parse_paths
from envs import SUITES, success_on_termination


def read_xy(path: Path, column: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one column of a logger CSV, skipping rows where it is empty."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(column)]
    if not rows:
        raise ValueError(f"{path} has no values of {column!r} yet")
    return [float(r["step"]) for r in rows], [float(r[column]) for r in rows]


def run_task(run_dir: Path) -> dict:
    """A run's task config from its ``.hydra/config.yaml`` (empty when the config is missing)."""
    cfg_path = run_dir / ".hydra" / "config.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(cfg_path)).get("task") or {}) if cfg_path.exists() else {}


def action_repeat(run_dir: Path) -> int:
    """Env steps per agent step of a run (1 when the run's Hydra config is missing)."""
    return int(run_task(run_dir).get("action_repeat", 1))  # counting has none: 1


def plot_curves(run_dirs: list[Path], out: Path, metric: str = "return", labels: list[str] | None = None) -> Path:
    """One panel: eval ``metric`` per run (markers) and training episode returns (faint, return only)."""
    if metric not in ("return", "success"):
        raise ValueError(f"unknown metric {metric!r}; expected 'return' or 'success'")
    labels = labels or [d.name for d in run_dirs]
    for run_dir in run_dirs:
        task = run_task(run_dir)
        if metric == "success" and task.get("suite") in SUITES and not success_on_termination(task):
            raise ValueError(f"{run_dir}: task {task['suite']}/{task.get('name')} has no success rate "
                             f"(its episodes do not end by reaching a goal); plot metric=return")  # fmt: skip
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for run_dir, label in zip(run_dirs, labels):
        eval_csv = run_dir / "eval.csv"
        if not eval_csv.exists():
            raise FileNotFoundError(f"{eval_csv} not found: is {run_dir} an online (agent=tdmpc2) run directory?")
        repeat = action_repeat(run_dir)
        steps, values = read_xy(eval_csv, f"eval/{metric}")
        (line,) = ax.plot([s * repeat for s in steps], values, "o-", label=label)
        episodes = run_dir / "episodes.csv"
        if metric == "return" and episodes.exists():
            steps, values = read_xy(episodes, "train/episode_return")
            ax.plot([s * repeat for s in steps], values, color=line.get_color(), alpha=0.3)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval {metric}" + (" (faint: training episodes)" if metric == "return" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


TABLE_KEYS = ("heldout_centroid_acc", "heldout_knn_acc", "heldout_probe_acc", "distinct_counts", "count_clusters",
              "kmeans_ari", "insample_centroid_acc", "encoding_size")  # fmt: skip


def repr_curve_path(run_dir: Path) -> Path:
    """A run's representation curve: ``repr.csv``, else the rebuilt ``analysis/repr.csv``."""
    for path in (run_dir / "repr.csv", run_dir / "analysis" / "repr.csv"):
        if path.exists():
            return path
    raise FileNotFoundError(f"{run_dir} has no repr.csv: is it a counting representation run (agent=pjepa)?")


def repr_table(curves: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table: per run, the final row and the best row (by held-out centroid accuracy)."""
    head = "| run | | step | " + " | ".join(TABLE_KEYS) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(TABLE_KEYS)]
    for label, c in curves.items():
        scores = [-1.0 if v != v else v for v in c["heldout_centroid_acc"]]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        for name, i in (("final", len(scores) - 1), ("best", best)):
            cells = [f"{c[k][i]:.3g}" if k in c and c[k][i] == c[k][i] else "-" for k in TABLE_KEYS]
            lines.append(f"| {label} | {name} | {c['step'][i]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_repr(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> str:
    """``curves.png`` of representation runs against the reference curve; returns the Markdown table."""
    from agent.analysis import plot_repr_curves
    from agent.analysis.monitor import read_curve

    labels = labels or [d.name for d in run_dirs]
    curves = {label: read_curve(repr_curve_path(d)) for d, label in zip(run_dirs, labels)}
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_repr_curves(curves).savefig(out, dpi=100, bbox_inches="tight")
    return repr_table(curves)


KEYS = ("out", "metric", "labels", "repr")


def main(argv: list[str] | None = None) -> Path:
    names, args = parse_paths(sys.argv[1:] if argv is None else argv, KEYS)
    run_dirs, out = [Path(n) for n in names], Path(args.get("out", "curves.png"))
    labels = args["labels"].split(",") if "labels" in args else None
    if labels and len(labels) != len(run_dirs):
        raise SystemExit(f"{len(labels)} labels for {len(run_dirs)} run directories")
    if args.get("repr", "false") not in ("true", "false"):
        raise SystemExit(f"repr must be true or false, got {args['repr']!r}")
    if args.get("repr") == "true":
        print(plot_repr(run_dirs, out, labels))
        print(out)
        return out
    path = plot_curves(run_dirs, out, args.get("metric", "return"), labels)
    print(path)
    return path


if __name__ == "__main__":
    main()
