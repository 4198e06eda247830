"""Checkpoints: atomic writes, clear errors for corrupt files and for config mismatches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "jepa-mpc/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the config that loads it."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + rename): a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, unreadable/truncated file, or not a jepa-mpc checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch.load raises many types (pickle, zip, EOF) on damaged files
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    return data


def diff_signature(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested signatures (empty when they agree)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_signature(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: checkpoint has {a!r}, config has {b!r}")
    return out


def check_signature(saved: dict, current: dict, path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming every key where checkpoint and config disagree."""
    diffs = diff_signature(saved, current)
    if diffs:
        raise CheckpointError(f"checkpoint {path} was made with a different config:\n  " + "\n  ".join(diffs))
