"""Optional Weights & Biases logging (``log.wandb=true``), beside the CSV and TensorBoard logs.

Runs are grouped as researchers sort them on a cluster: ``group`` = the sweep (the run directory's
parent, e.g. ``multirun/<date-time>``), ``job_type`` = the variant (the run's Hydra overrides less the
seed and logging keys), ``name`` = the run directory. ``log.wandb_mode=offline`` (the default) needs
no network or account: everything lands in ``<run dir>/wandb/`` and ``wandb sync`` uploads it later.
A resumed run continues the same W&B run id (derived from the run directory).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agent.analysis.sweep import variant_of


def run_identity(run_dir: Path) -> dict[str, Any]:
    """``id``, ``name``, ``group``, ``job_type`` and ``tags`` of a run directory for ``wandb.init``."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    variant = variant_of(overrides)
    label = " ".join(variant) or "(baseline)"
    return {
        "id": hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16],
        "name": run_dir.name,
        "group": run_dir.resolve().parent.name,
        "job_type": label[:64],  # W&B's limit; the whole variant is in the tags and the config
        "tags": [o[:64] for o in variant],
    }


class WandbSink:
    """One W&B run in offline or online mode; :meth:`log` takes the logger's plain-float rows."""

    def __init__(self, run_dir: str | Path, config: dict, mode: str, project: str) -> None:
        import wandb

        run_dir = Path(run_dir)
        os.environ.setdefault("WANDB_SILENT", "true")
        ident = run_identity(run_dir)
        self.run = wandb.init(
            project=project, mode=mode, dir=str(run_dir), resume="allow", config={**config, "variant": ident["job_type"]},
            settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True), **ident,
        )  # fmt: skip

    def log(self, step: int, row: dict[str, float]) -> None:
        self.run.log(row, step=step)

    def close(self) -> None:
        self.run.finish()
