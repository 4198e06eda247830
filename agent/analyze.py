"""Representation analysis of a trained run: ``python -m agent.analyze run_dir=<dir> [key=value ...]``.

Keys: ``run_dir`` (or ``checkpoint``) required; ``out`` (default ``<run_dir>/analysis``),
``num_obs`` (256), ``seed`` (42), ``device`` (cpu). Writes metrics.json, pca.png, heatmap.png,
reconstructions.png and prints the metrics as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.api import load
from agent.monitor import analyse, monitoring_set

KEYS = ("run_dir", "checkpoint", "out", "num_obs", "seed", "device")


def parse(argv: list[str], keys: tuple[str, ...] = KEYS) -> dict[str, str]:
    """``key=value`` arguments -> dict, rejecting unknown keys; ``run_dir`` or ``checkpoint`` required.

    Shared by the analysis and evaluation CLIs.
    """
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise SystemExit(f"bad argument {item!r}; expected key=value with key in {keys}")
        args[key] = value
    if "run_dir" not in args and "checkpoint" not in args:
        raise SystemExit("give run_dir=<run directory> or checkpoint=<file.pt>")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    source = args.get("checkpoint") or args["run_dir"]
    model = load(source, args.get("device", "cpu"))
    task = model.config["task"]
    if task.get("suite") != "counting":
        raise SystemExit(f"the representation analysis needs a counting task, this run is {task.get('name')!r}")
    default_out = Path(args["run_dir"]) / "analysis" if "run_dir" in args else model.path.parent.parent / "analysis"
    out = Path(args.get("out", default_out))
    pixels, counts = monitoring_set(task, int(args.get("num_obs", 256)), int(args.get("seed", 42)))
    decode = model.decode if model.agent.probe is not None else None
    metrics = analyse(model.encode, pixels, counts, out, decode, title=f"step {model.step}")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
