"""Whether each optimiser step's loss and gradient were finite: checked at once on a CPU, recorded on a GPU."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """A loss, gradient or weight became NaN/inf; the update was not applied (or not saved)."""


class FiniteWatch:
    """Checks the loss and the gradient norm of every optimiser step it is shown.

    At once (``deferred=False``): a non-finite value raises :class:`NonFiniteLossError` before its optimiser
    steps. A CPU computes in program order, so asking costs nothing there. On a GPU, reading a value back
    waits until the device has run all that was queued before it: asking twice per optimiser step would make
    the host wait for each forward and backward instead of queueing the next update while the device works.
    Deferred (``deferred=True``): each step records on the device whether it was finite (and, for the first
    that was not, its loss terms), and goes ahead; :meth:`raise_if_bad` reads the record back (one wait) where
    the run's state leaves it: before a log row, a checkpoint, an analysis, an evaluation, or the env taking a
    planned action.
    ``None`` (the agents' default): deferred exactly where the loss is not on a CPU.
    """

    def __init__(self, deferred: bool | None = None) -> None:
        self.deferred = deferred
        self._steps = 0  # optimiser steps recorded, of every loss (in TD-MPC2 a bad policy step poisons the next Q targets)
        self._first: dict[str, Tensor] = {}  # per loss name: the 0-based step (of all) of its first non-finite one, -1 if none
        self._values: dict[str, Tensor] = {}  # per loss name: loss, gradient norm and terms of that step
        self._names: dict[str, list[str]] = {}
        self._read = 0  # steps recorded at the last read that found all finite (nothing new to read before more)

    def _defers(self, loss: Tensor) -> bool:
        return loss.device.type != "cpu" if self.deferred is None else self.deferred

    def loss(self, what: str, loss: Tensor, terms: Mapping[str, Tensor] | None = None) -> None:
        """Before the backward: at once, raise if ``loss`` (the ``what`` loss) is NaN/inf, naming ``terms``."""
        if not self._defers(loss) and not torch.isfinite(loss):
            shown = {k: float(v.detach()) for k, v in (terms or {what: loss}).items()}
            raise NonFiniteLossError(f"non-finite {what} loss: {shown}")

    def grads(self, what: str, loss: Tensor, grad_norm: Tensor, terms: Mapping[str, Tensor] | None = None) -> None:
        """Before the optimiser steps: at once, raise if ``grad_norm`` is NaN/inf; deferred, record this step."""
        if not self._defers(loss):
            if not torch.isfinite(grad_norm):
                raise NonFiniteLossError(f"non-finite {what} gradient (norm {float(grad_norm)}) from a finite loss {float(loss.detach()):.4g}")
            return
        terms = terms or {}
        values = torch.stack([loss.detach().float(), grad_norm.detach().float(), *(v.detach().float() for v in terms.values())])
        step = self._steps
        if what not in self._first:
            self._first[what] = torch.full((), -1, dtype=torch.long, device=values.device)
            self._values[what] = torch.full_like(values, float("nan"))
            self._names[what] = list(terms)
        first = self._first[what].lt(0) & ~torch.isfinite(values[:2]).all()
        self._first[what] = torch.where(first, step, self._first[what])
        self._values[what] = torch.where(first, values, self._values[what])
        self._steps = step + 1

    def raise_if_bad(self) -> None:
        """Raise :class:`NonFiniteLossError` if a deferred step was not finite, naming the loss whose step was
        the earliest such, how many optimiser steps (of all losses) before this check, and its terms then.
        The record reads back in one wait, and only when steps were recorded since the last read (a log row and
        the checkpoint after it, or an evaluation and the next action, share one)."""
        if self._steps == self._read:
            return
        names = list(self._first)
        bad = [(first, what) for first, what in zip(torch.stack([self._first[n] for n in names]).tolist(), names) if first >= 0]
        if bad:
            first, what = min(bad)
            loss, norm, *terms = self._values[what].tolist()
            shown = dict(zip(self._names[what], terms)) or {what: loss}
            raise NonFiniteLossError(
                f"non-finite {what} loss or gradient {self._steps - first} optimiser step(s) before this check "
                f"(loss {loss:.4g}, gradient norm {norm:.4g}; terms {shown})"
            )
        self._read = self._steps
