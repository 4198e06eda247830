"""Checkpoints: atomic writes, clear errors for corrupt files and for config mismatches."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchrl.data import TensorDictReplayBuffer

FORMAT = "jepa-mpc/1"


log = logging.getLogger(__name__)


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


#: Signature keys added after checkpoints were first written, with the value older checkpoints had.
LEGACY_DEFAULTS = {"model.pixel_encoder": "flatten", "model.resnet_blocks": 8, "model.dyn_layers": 2, "aux.net": "conv"}


def diff_signature(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested signatures (empty when they agree).

    A key an older checkpoint lacks counts as its :data:`LEGACY_DEFAULTS` value.
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        a, b = saved.get(key, LEGACY_DEFAULTS.get(name, "<missing>")), current.get(key, "<missing>")
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


def save_buffer(buffer: TensorDictReplayBuffer, path: str | Path, step: int) -> Path:
    """Write the filled part of ``buffer`` to the file ``path`` (atomically), oldest transition first.

    torchrl's ``ReplayBuffer.dumps`` writes the whole capacity (2.5 GB for 100k pixel transitions
    however few are stored) and its memory-mapped files load silently zero-filled when truncated,
    so the ``len(buffer)`` stored transitions are saved with ``torch.save``, in chronological order:
    refilling an empty buffer with them gives the same contents, and the same transition (the
    oldest) is overwritten next. ``step`` is the agent step of the matching checkpoint.
    """
    n, capacity = len(buffer), buffer.storage.max_size
    # the round-robin writer's next slot, i.e. the oldest transition once full (all writes go
    # through add/extend here, so the cursor equals write_count modulo the capacity)
    first = buffer.write_count % capacity if n == capacity else 0
    data = buffer.storage[(torch.arange(n) + first) % n].to_dict() if n else {}
    return save_checkpoint(path, {"step": int(step), "transitions": n, "data": data})


def load_buffer(buffer: TensorDictReplayBuffer, path: str | Path, step: int) -> bool:
    """Refill an empty ``buffer`` from :func:`save_buffer`'s file if it matches ``step``.

    Returns False, with a warning, when there is no saved buffer, it cannot be read, or it belongs
    to another step (a kill between writing the buffer and the checkpoint): the run then goes on
    and refills the buffer by acting, as it would without a saved one. When the saved buffer holds
    more transitions than ``buffer`` can (a smaller ``data.buffer_size``), the newest are kept.
    """
    from tensordict import TensorDict

    if len(buffer):
        raise ValueError(f"load_buffer fills an empty replay buffer; this one holds {len(buffer)} transitions")
    try:
        saved = load_checkpoint(path)
    except CheckpointError as err:
        log.warning("no usable replay buffer (%s); the buffer is refilled by acting", err)
        return False
    if saved.get("step") != step:
        log.warning("replay buffer %s is from step %s, the checkpoint from step %d; refilling it", path, saved.get("step"), step)
        return False
    n = int(saved["transitions"])
    if n:
        data = TensorDict(saved["data"], batch_size=[n])
        keep = min(n, buffer.storage.max_size)
        if keep < n:
            log.warning("replay buffer %s holds %d transitions, more than data.buffer_size; keeping the newest %d", path, n, keep)
        buffer.extend(data[n - keep :])
    return True
