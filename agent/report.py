"""One report over a sweep: ``python -m agent.report PATH [PATH ...] [out=DIR] [reps=N] [seed=N]``.

``PATH``: a sweep directory (``train.py -m``; its job folders are found), a folder of run
directories, or run directories. Every run is grouped into its variant (its overrides less the seed
and logging keys, and less those every run shares) and aggregated over seeds: representation runs
by the mean of their final metrics (``analysis/metrics.json``), online runs by the interquartile
mean of their last evaluation's return and success (``eval.csv``), each with a 95% stratified
bootstrap CI (``rliable``, ``reps`` resamples, default 10000, RNG ``seed`` 0). Runs that failed, are
incomplete (killed, still running, outputs missing) or corrupt are listed with the reason, never
dropped silently.

Writes to ``out`` (default ``<first PATH>/report``): ``report.md`` (also printed), ``report.csv``
(variant, metric, estimator, n, value, CI), ``runs.csv`` (every run with its status and reason) and
``curves.png`` (each variant's learning curve with its CI band).
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.analysis.aggregate import (
    curve_bands,
    estimates,
    markdown,
    plot_bands,
    write_tables,
)
from agent.analysis.sweep import find_runs, read_run, variant_labels
from agent.cli import parse_paths

KEYS = ("out", "reps", "seed")


def main(argv: list[str] | None = None) -> Path:
    names, args = parse_paths(sys.argv[1:] if argv is None else argv, KEYS)
    paths = [Path(a) for a in names]
    try:
        reps, seed = int(args.get("reps", 10_000)), int(args.get("seed", 0))
    except ValueError as err:
        raise SystemExit(f"reps and seed must be integers: {err}") from err
    if reps < 100:
        raise SystemExit(f"reps must be >= 100 for a 95% interval, got {reps}")
    try:
        run_dirs, broken = find_runs(paths)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    out = Path(args.get("out", paths[0] / "report"))
    records = [read_run(d) for d in run_dirs if out not in d.parents] + broken
    labels, shared = variant_labels(records)
    ests = estimates(records, labels, reps, seed)
    text = markdown(ests, records, labels, shared)
    write_tables(ests, records, labels, out)
    (out / "report.md").write_text(text)
    plot_bands(curve_bands(records, labels, min(reps, 2_000), seed), out / "curves.png")
    print(text)
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
