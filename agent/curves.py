"""Learning curves of online runs: ``python -m agent.curves RUN_DIR [RUN_DIR ...] --out curves.png``.

Reads each run's ``eval.csv`` (evaluation with the planner) and ``episodes.csv`` (training episode
returns, with exploration) and plots them against env steps (agent steps x the task's action repeat,
read from the run's ``.hydra/config.yaml`` when present). ``--metric success`` plots the eval success
rate instead of the return (the counting task).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


def read_xy(path: Path, column: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one column of a logger CSV, skipping rows where it is empty."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(column)]
    if not rows:
        raise ValueError(f"{path} has no values of {column!r} yet")
    return [float(r["step"]) for r in rows], [float(r[column]) for r in rows]


def action_repeat(run_dir: Path) -> int:
    """Env steps per agent step of a run (1 when the run's Hydra config is missing)."""
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        return 1
    return int(OmegaConf.load(cfg_path).get("task", {}).get("action_repeat", 1))  # counting has none: 1


def plot_curves(run_dirs: list[Path], out: Path, metric: str = "return", labels: list[str] | None = None) -> Path:
    """One panel: eval ``metric`` per run (markers) and training episode returns (faint, return only)."""
    if metric not in ("return", "success"):
        raise ValueError(f"unknown metric {metric!r}; expected 'return' or 'success'")
    labels = labels or [d.name for d in run_dirs]
    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    parser.add_argument("--metric", default="return", choices=("return", "success"))
    parser.add_argument("--labels", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.run_dirs):
        parser.error(f"{len(args.labels)} labels for {len(args.run_dirs)} run directories")
    path = plot_curves(args.run_dirs, args.out, args.metric, args.labels)
    print(path)
    return path


if __name__ == "__main__":
    main()
