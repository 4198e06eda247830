"""Metrics logging: CSV (one row per logged step) and TensorBoard, both in the run directory."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


class Logger:
    """Writes ``{name: scalar}`` rows to ``<run_dir>/metrics.csv`` and TensorBoard events.

    The CSV's columns are fixed by the first row; later rows with new keys raise, so a run's
    file stays one table. ``.item()`` happens here, not in the training maths.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume: bool = False) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self._fields: list[str] | None = None
        if resume and self.csv_path.exists():
            with self.csv_path.open() as f:
                header = f.readline().strip()
            self._fields = header.split(",") if header else None
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tb"))

    def log(self, step: int, metrics: dict[str, float | torch.Tensor]) -> dict[str, float]:
        """Log one row at ``step``; returns the plain-float row."""
        row = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        if self._fields is None:
            self._fields = ["step", *sorted(row)]
            with self.csv_path.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        extra = set(row) - set(self._fields)
        if extra:
            raise KeyError(f"metrics {sorted(extra)} were not in the first logged row {self._fields}")
        with self.csv_path.open("a", newline="") as f:
            csv.writer(f).writerow([step, *(row.get(k, "") for k in self._fields[1:])])
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)
        return row

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
