"""The trajectories a replay ring holds: where slices may start, drawn as TD-MPC2's slice sampler draws them.

A trajectory is a run of consecutively written transitions with the same key. Each keeps, in write indices
(the ring's slot is the index modulo its capacity): ``start``, the first transition a slice may start at;
``length``, the transitions from there (<= 0: none); ``floor``, its first stored observation. They are equal
but with stacked frames (:mod:`agent.data.frames`), where a trajectory whose first stored observation is not a
reset's starts ``k - 1`` after its floor: the stacks before lack frames. A few small CPU tensors, kept as the
data comes (torchrl's ``SliceSampler`` recomputed the boundaries over the whole storage after every write).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Segments:
    """Trajectories in a ring, oldest first.

    Args:
        frame_stack: frames an observation stacks (1: none).
    """

    def __init__(self, frame_stack: int = 1) -> None:
        self.k = frame_stack
        self.start = torch.zeros(0, dtype=torch.long)
        self.length = torch.zeros(0, dtype=torch.long)
        self.floor = torch.zeros(0, dtype=torch.long)
        self.last_key: object = None  # the newest trajectory's key (it may go on at the next write)

    def __len__(self) -> int:
        return len(self.length)

    def goes_on(self, key: object) -> bool:
        """Whether a transition of trajectory ``key`` written next goes on with the newest one."""
        return len(self) > 0 and self.last_key == key

    def clear(self) -> None:
        """Forget every trajectory (the ring is about to be overwritten whole)."""
        self.start, self.length, self.floor, self.last_key = self.start[:0], self.length[:0], self.floor[:0], None

    def add(self, keys: torch.Tensor, written: int, reset: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """The trajectories of ``keys [n]`` (CPU), written from write index ``written``. With stacked frames,
        ``reset(positions [m])`` tells which of the new trajectories begin (at those positions in the write) with
        a reset's observation, as ``bool [m]``."""
        n = keys.numel()
        if n == 1 and self.goes_on(keys.item()):  # the online job's common case
            self.length[-1] += 1
            return
        change = torch.ones(n, dtype=torch.bool)
        change[1:] = keys[1:] != keys[:-1]
        starts = change.nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([n]))
        if self.goes_on(keys[0].item()):  # the newest trajectory goes on
            self.length[-1] += lengths[0]
            starts, lengths = starts[1:], lengths[1:]
        late = torch.zeros_like(starts)  # no slice starts in a stack that lacks frames
        if self.k > 1 and len(starts):
            late = (~reset(starts)).long() * (self.k - 1)
        self.floor = torch.cat([self.floor, starts + written])
        self.start = torch.cat([self.start, starts + written + late])
        self.length = torch.cat([self.length, lengths - late])
        self.last_key = keys[-1].item()

    def drop(self, oldest: int) -> None:
        """Forget what the ring overwrote, below write index ``oldest``: whole trajectories, and the oldest left's
        first transitions (with stacked frames, ``k - 1`` more: their stacks lack frames)."""
        if not len(self) or self.floor[0] >= oldest:
            return
        keep = self.start + self.length > oldest
        self.start, self.length, self.floor = self.start[keep], self.length[keep], self.floor[keep]
        if self.floor[0] < oldest:
            end = self.start[0] + self.length[0]
            self.floor[0], self.start[0] = oldest, oldest + self.k - 1
            self.length[0] = end - self.start[0]

    def draw(self, horizon: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` slices of ``horizon`` transitions: trajectories long enough drawn uniformly (with
        replacement), then a start inside each uniformly (torch's global generator). Returns their first write
        indices and their trajectories' floors, ``[B]`` each."""
        fits = self.length >= horizon
        start, length, floor = self.start[fits], self.length[fits], self.floor[fits]
        if not len(start):
            raise RuntimeError(f"no trajectory of at least horizon={horizon} transitions among the {len(self)} stored")
        pick = torch.randint(len(start), (batch_size,))
        first = start[pick] + (torch.rand(batch_size) * (length[pick] - horizon + 1)).long()  # (floored)
        return first, floor[pick]

    def writes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every transition a slice may start at, oldest first: write indices and their trajectories' floors, ``[n]`` each."""
        lengths = self.length.clamp(min=0)
        seg = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        return self.start[seg] + torch.arange(len(seg)) - (lengths.cumsum(0) - lengths)[seg], self.floor[seg]
