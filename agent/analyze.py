"""Representation analysis of a trained run: ``python -m agent.analyze run_dir=<dir> [key=value ...]``.

Keys: ``run_dir`` (or ``checkpoint``) required; ``out`` (default ``<run_dir>/analysis``),
``num_obs`` (256), ``seed`` (42), ``heldout_num_obs`` (512), ``heldout_seed`` (10000), ``device``
(cpu), ``checkpoints`` (``last`` | ``all``). Writes metrics.json, pca.png, heatmap.png,
reconstructions.png and prints the metrics as JSON; what the training's own analysis of the same
step measured and this one cannot (the theorem's premise residuals, which need the run's
transitions; the curve's ``final`` / ``best``) is kept in metrics.json, not overwritten.
``checkpoints=all`` analyses every kept ``checkpoints/step_<n>.pt`` of the run into
``<out>/step_<n>/`` and writes the curve (``<out>/repr.csv``, ``<out>/curves.png``, ``final`` /
``best`` in ``<out>/metrics.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.analysis.monitor import analyse, analysis_sets, read_curve, summarise
from agent.api import TrainedModel, load
from agent.cli import parse
from agent.run.logger import Logger

KEYS = ("run_dir", "checkpoint", "out", "num_obs", "seed", "heldout_num_obs", "heldout_seed", "device", "checkpoints")
DEFAULTS = {"num_obs": 256, "seed": 42, "heldout_num_obs": 512, "heldout_seed": 10000}


def _analyse_model(model: TrainedModel, sets, out: Path) -> dict:
    decode = model.decode if model.agent.probe is not None else None
    return analyse(model.encode, *sets, out, decode, title=f"step {model.step}", task=model.config["task"])


def _kept_from_training(previous: dict, step: int, written: dict) -> dict:
    """What ``previous`` (an analysis of the same run) holds for checkpoint ``step`` that ``written`` lacks.

    The training's metrics.json names its step in ``final``; one of another step (or without it) keeps nothing.
    """
    if previous.get("final", {}).get("step") != step:
        return {}
    return {k: v for k, v in previous.items() if k not in written}


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv, KEYS)
    every = args.get("checkpoints", "last")
    if every not in ("last", "all"):
        raise SystemExit(f"checkpoints must be 'last' or 'all', got {every!r}")
    if every == "all" and "run_dir" not in args:
        raise SystemExit("checkpoints=all needs run_dir=<run directory>")
    device = args.get("device", "cpu")
    source = args.get("checkpoint") or args["run_dir"]
    model = load(source, device)
    task = model.config["task"]
    if task.get("suite") != "counting":
        raise SystemExit(f"the representation analysis needs a counting task, this run is {task.get('name')!r}")
    default_out = Path(args["run_dir"]) / "analysis" if "run_dir" in args else model.path.parent.parent / "analysis"
    out = Path(args.get("out", default_out))
    sets = analysis_sets(task, {k: int(args.get(k, v)) for k, v in DEFAULTS.items()})
    if every == "last":
        path = out / "metrics.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        metrics = _analyse_model(model, sets, out)
        written = json.loads(path.read_text())
        kept = _kept_from_training(previous, model.step, written)
        if kept:
            path.write_text(json.dumps({**written, **kept}, indent=2))
            print(f"kept from the training's analysis of step {model.step}: {sorted(kept)}", file=sys.stderr)
        print(json.dumps(metrics, indent=2))
        return metrics
    paths = sorted((Path(args["run_dir"]) / "checkpoints").glob("step_*.pt"))
    if not paths:
        raise SystemExit(f"{args['run_dir']}/checkpoints has no step_<n>.pt checkpoints to analyse")
    logger = Logger(out, tensorboard=False)  # writes <out>/repr.csv as the training run writes its own
    for path in paths:
        m = load(path, device)
        metrics = _analyse_model(m, sets, out / f"step_{m.step:07d}")
        logger.log(m.step, {f"repr/{k}": float("nan") if v is None else v for k, v in metrics.items()}, table="repr")
        print(json.dumps({"step": m.step, **metrics}))
    logger.close()
    summary = summarise(read_curve(out / "repr.csv"), out, Path(args["run_dir"]).name)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
