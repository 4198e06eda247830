"""A run's steady rate from its ``metrics.csv``: the window between two logged rows of a cumulative rate.

Both jobs log ``perf/updates_per_s`` (representation) or ``perf/env_steps_per_s`` (online) as steps done
over wall time since the loop started, so the first rows carry the compile and the seed steps. From two
rows ``a < b`` the window's rate is ``(s_b - s_a) / (t_b - t_a)`` with ``t_k = (s_k - s_0) / r_k``:
what the loop ran at between them, its start cancelled out.

    python benchmarks/steady_rate.py runs/x/metrics.csv perf/env_steps_per_s [--start 0] [--from-fraction 0.5]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def steady_rate(path: str | Path, column: str, start: int = 0, from_fraction: float = 0.5) -> tuple[float, int, int]:
    """Rate between the logged row ``from_fraction`` of the way through and the last: ``(rate, s_a, s_b)``.

    ``start`` is the step the loop started from (0 for a fresh run, the checkpoint's step for a resume;
    then ``from_fraction`` must put the first row after the resume: the file also holds the rows before it).
    """
    if not 0 <= from_fraction < 1:
        raise ValueError(f"from_fraction must be in [0, 1), got {from_fraction}")
    with open(path, newline="") as f:
        rows = [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]
    if len(rows) < 2:
        raise ValueError(f"{path} has {len(rows)} rows with {column!r}; a window needs two")
    a, b = rows[min(int(from_fraction * (len(rows) - 1)), len(rows) - 2)], rows[-1]
    elapsed = [(s - start) / r for s, r in (a, b)]
    return (b[0] - a[0]) / (elapsed[1] - elapsed[0]), a[0], b[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("column")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--from-fraction", type=float, default=0.5)
    args = parser.parse_args()
    rate, a, b = steady_rate(args.metrics, args.column, args.start, args.from_fraction)
    print(f"{args.column} steady: {rate:.1f} (steps {a} to {b}; {args.metrics})")


if __name__ == "__main__":
    main()
