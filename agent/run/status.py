"""A run's ``status.json``: ``running``, ``complete`` or ``failed`` (with the reason), read by ``agent.report``.

``train.py`` writes ``running`` before any work, ``complete`` (with the last step) when the run ends,
``failed`` (with the error) when it stops on an error or an interrupt. A run killed from outside
(SIGKILL, a cluster's time limit) stays ``running``: a report shows it as incomplete at its last step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
STATES = ("running", "complete", "failed")


def write_status(run_dir: str | Path, state: str, **fields: Any) -> Path:
    """Atomically replace ``<run_dir>/status.json`` with ``{"status": state, "time": ..., **fields}``."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
    path = Path(run_dir) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}, indent=2))
    os.replace(tmp, path)
    return path


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's status, ``None`` when it has no status file; ``ValueError`` when the file is corrupt."""
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt: {err}") from err
    if not isinstance(data, dict) or data.get("status") not in STATES:
        raise ValueError(f"{path} is corrupt: no status in {STATES}")
    return data
