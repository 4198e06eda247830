"""Metrics logging: CSV (one row per logged step), TensorBoard and optionally W&B, in the run directory."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch


class Logger:
    """Writes ``{name: scalar}`` rows to ``<run_dir>/<table>.csv`` and TensorBoard events.

    Each table's columns are fixed by its first row; later rows with new keys raise, so every
    file stays one table (``metrics`` for losses, e.g. ``episodes`` or ``eval`` for others).
    ``.item()`` happens here, not in the training maths.

    A run resumed from its checkpoint at step ``resume_step`` appends to the existing tables
    after dropping the rows logged past that step (a killed run logs after its last checkpoint;
    the resumed run logs those steps again), and purges them from TensorBoard likewise.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None, sink: Any = None) -> None:
        self.dir = Path(run_dir)
        self.sink = sink  # e.g. a WandbSink: ``log(step, row)`` and ``close()``
        self.dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume_step is not None
        self._fields: dict[str, list[str]] = {}
        self._rows_seen: dict[str, list[int]] = {}
        if resume_step is not None:
            for path in self.dir.glob("*.csv"):
                truncate_after(path, resume_step)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = 0 if resume_step is None else resume_step + 1  # a fresh run also drops stale events
            self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge)

    def _columns(self, table: str, row: dict[str, float]) -> tuple[Path, list[str]]:
        path = self.dir / f"{table}.csv"
        if table not in self._fields:
            if self.resume and path.exists():
                with path.open() as f:
                    self._fields[table] = f.readline().strip().split(",")
            else:
                self._fields[table] = ["step", *sorted(row)]
                with path.open("w", newline="") as f:
                    csv.writer(f).writerow(self._fields[table])
        return path, self._fields[table]

    def _widen(self, path: Path, table: str, new: list[str]) -> list[str]:
        """Add columns ``new`` to an existing table (earlier rows get empty cells)."""
        with path.open(newline="") as f:
            header, *rows = list(csv.reader(f))
        header = [*header, *new]
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *(r + [""] * len(new) for r in rows)])
        self._fields[table] = header
        return header

    def log(self, step: int, metrics: dict[str, float | torch.Tensor], table: str = "metrics") -> dict[str, float]:
        """Log one row of ``table`` at ``step``; returns the plain-float row."""
        row = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        path, fields = self._columns(table, row)
        extra = set(row) - set(fields)
        if extra and self.resume and len(self._rows_seen.get(table, ())) == 0:
            fields = self._widen(path, table, sorted(extra))  # a run resumed by a newer version logs more columns
        elif extra:
            raise KeyError(f"metrics {sorted(extra)} were not in the first logged row of {table}.csv: {fields}")
        self._rows_seen.setdefault(table, []).append(step)
        with path.open("a", newline="") as f:
            csv.writer(f).writerow([step, *(row.get(k, "") for k in fields[1:])])
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)
        if self.sink is not None:
            self.sink.log(step, row)
        return row

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.sink is not None:
            self.sink.close()


def truncate_after(path: Path, step: int) -> None:
    """Drop the rows of a logger CSV whose ``step`` column is greater than ``step``.

    Also drops half-written rows (a kill mid-write) and removes a file without a header, so the
    resumed run starts that table afresh.
    """
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["step"]:
        path.unlink()
        return
    header = rows[0]
    kept = [r for r in rows[1:] if len(r) == len(header) and int(float(r[0])) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *kept])
