"""Checkpoints: safe to load (no code runs), verified by a content hash, written atomically.

A checkpoint file holds ``{"format", "sha256", "payload"}`` saved with ``torch.save`` and read with
``torch.load(weights_only=True)``: only tensors and plain Python types (dict, list, tuple, str,
numbers, None), so a crafted file cannot run code. ``sha256`` is a digest of the payload's content
(structure, scalars and every tensor's bytes), recomputed on load: a flipped bit is an error, not
silently wrong weights. A payload key a reader asks for but the file lacks is a
:class:`CheckpointError` too. :class:`Checkpointer` keeps a run's ``step_<n>.pt`` files with
rotation and ``last.pt``, and finds the newest complete one to resume from.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "jepa-mpc/2"
LEGACY_FORMAT = "jepa-mpc/1"  # pickled numpy RNG state, no content hash: read with numpy's array type allowed

log = logging.getLogger(__name__)

#: What an older checkpoint's numpy RNG state unpickles to: plain arrays, no code.
_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 / 1
_LEGACY_GLOBALS = [_NP_CORE.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, incomplete, unwritable, or does not fit the config that loads it."""


class Checkpoint(dict):
    """A loaded payload (or a dict inside it): a missing key raises :class:`CheckpointError` naming the file."""

    def __init__(self, data: dict, path: Path, where: str = "") -> None:
        super().__init__({k: Checkpoint(v, path, f"{where}{k}.") if type(v) is dict else v for k, v in data.items()})
        self.path, self.where = path, where

    def __missing__(self, key: Any) -> Any:
        raise CheckpointError(f"checkpoint {self.path} has no {self.where}{key} (made by another version, or not a complete checkpoint)")


def digest(obj: Any) -> str:
    """sha256 of a payload's content: its structure, scalars and every tensor's dtype, shape and bytes."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"{'L' if isinstance(x, list) else 'U'}{len(x)}".encode())
            for v in x:
                feed(v)
        elif isinstance(x, float):
            h.update(b"F" + struct.pack("<d", x))
        elif x is None or isinstance(x, (bool, int, str, torch.dtype, torch.Size)):
            h.update(f"S{type(x).__name__}:{x!r}".encode())
        else:
            raise TypeError(f"checkpoint payloads hold tensors and plain types only, got {type(x).__name__}")

    feed(obj)
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename).

    A kill never leaves half a file under ``path``; a failed write (disk full, read-only dir) removes
    the temp file, keeps whatever ``path`` held before, and raises :class:`CheckpointError` naming it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    record = {"format": FORMAT, "sha256": digest(payload), "payload": payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed stream write as RuntimeError
        tmp.unlink(missing_ok=True)
        full = isinstance(err, OSError) and err.errno == errno.ENOSPC or "failed writing" in str(err)
        why = "the disk is full" if full else f"{type(err).__name__}: {err}"
        raise CheckpointError(f"could not write checkpoint {path} ({why}); the previous checkpoint there is kept") from err
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; returns its payload.

    Loads with ``weights_only=True`` onto the CPU (a module moves what it loads onto its own
    device, and the content hash is checked on the CPU).

    Raises:
        CheckpointError: missing, unreadable, truncated or altered file, or not a jepa-mpc checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (unpickling, zip, EOF) on damaged or unsafe files
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or unsafe to load ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if data["format"] == LEGACY_FORMAT:
        log.warning("%s is an older checkpoint without a content hash: loaded unverified", path)
        return Checkpoint({k: v for k, v in data.items() if k != "format"}, path)
    if not isinstance(data.get("payload"), dict) or data.get("sha256") != digest(data["payload"]):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 (altered or damaged on disk)")
    return Checkpoint(data["payload"], path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its ``checkpoints/last.pt``; a file -> itself."""
    path = Path(path)
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"run directory {path} has no checkpoints/last.pt")
        return last
    return path


_STEP_FILE = re.compile(r"step_(\d+)\.pt")


class Checkpointer:
    """A run's checkpoints: ``step_<n>.pt`` (the newest ``keep`` kept) and ``last.pt`` (the newest).

    ``last.pt`` is a hard link to (or, where links fail, a copy of) the newest step file, so a save
    writes the payload once. On start, :meth:`latest` removes stale ``.tmp`` files and returns the
    newest checkpoint that loads and verifies, falling back from a damaged ``last.pt`` to older
    step files; when files exist but none loads, it stops and names them, and never lets the run
    start over in their place.
    """

    def __init__(self, directory: str | Path, keep: int) -> None:
        if int(keep) < 1:
            raise ValueError(f"checkpoint.keep must be >= 1 (last.pt is always kept), got {keep}")
        self.dir, self.keep = Path(directory), int(keep)
        self.last = self.dir / "last.pt"

    def step_files(self) -> list[Path]:
        """The run's ``step_<n>.pt`` files, oldest first."""
        files = [p for p in self.dir.glob("step_*.pt") if _STEP_FILE.fullmatch(p.name)]
        return sorted(files, key=lambda p: int(_STEP_FILE.fullmatch(p.name).group(1)))

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        """Write ``step_<step>.pt``, point ``last.pt`` at it, drop step files beyond ``keep``."""
        path = save_checkpoint(self.dir / f"step_{int(step):07d}.pt", payload)
        link = self.dir / "last.pt.tmp"
        try:
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # no hard links on this file system: copy
                save_checkpoint(link.with_suffix(""), payload)
                return self._rotate(self.last)
            os.replace(link, self.last)
        except OSError as err:
            link.unlink(missing_ok=True)
            raise CheckpointError(f"could not update {self.last} ({err}); {path} holds step {step}") from err
        return self._rotate(self.last)

    def _rotate(self, last: Path) -> Path:
        for old in self.step_files()[: -self.keep]:
            old.unlink()
        return last

    def clean_tmp(self) -> None:
        """Remove temp files a killed save left behind."""
        for tmp in self.dir.glob("*.tmp"):
            log.warning("removing %s, left by an interrupted checkpoint write", tmp)
            tmp.unlink()

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None when the run has none yet.

        Raises:
            CheckpointError: checkpoint files exist but none loads (named in the message).
        """
        if not self.dir.is_dir():
            return None
        self.clean_tmp()
        # newest step file first (a kill between writing it and relinking last.pt leaves last.pt one
        # interval behind), then last.pt (older runs, or a copy where links fail), then older steps
        steps = self.step_files()[::-1]
        candidates = steps[:1] + ([self.last] if self.last.exists() else []) + steps[1:]
        errors = []
        for path in candidates:
            try:
                data = load_checkpoint(path)
            except CheckpointError as err:
                log.warning("skipping %s: %s", path, err)
                errors.append(str(err))
                continue
            if errors:
                log.warning("resuming from %s, the newest checkpoint that loads", path)
            data.path = path
            return data
        if candidates:
            raise CheckpointError(
                "this run directory holds checkpoints but none of them loads, so the run cannot resume; "
                "nothing was overwritten. Move them away or use another run directory:\n  " + "\n  ".join(errors)
            )
        return None

    def refuse_fresh_start(self) -> None:
        """Stop before a fresh start (``resume=false``) would delete or overwrite a run's checkpoints."""
        found = ([self.last] if self.last.exists() else []) + self.step_files()
        if found:
            raise CheckpointError(
                f"resume=false, but {self.dir} already holds checkpoints ({', '.join(p.name for p in found)}): "
                "a fresh start would overwrite that run. Use another run directory or move them away"
            )


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
