"""The next observations a replay ring that stores each observation once still needs: its trajectories' ends.

With ``ReplayBuffer(obs_once=True)`` a transition's next observation is the following slot's observation,
but for the last transition of each trajectory in a write (a "tail": a batch row's end or an episode's),
whose next observation is stored here; when the next write goes on with that trajectory (an online run's
step), the tail is freed again. The tails live in a FIFO in the order they were written, so the
oldest are the first overwritten in the ring; it holds the tails of the transitions still in the ring
(~a third of the representation job's). The first write sizes it for the ring at that write's share of tails;
when more are alive than it has room for, it grows to 1.25x the tails then alive (copying the rows in use). It
never shrinks.
"""

from __future__ import annotations

import math

import torch

from agent.data.rows import choose, gather, scatter, to_device


class TailStore:
    """Next observations of a ring's tails, by slot.

    Args:
        capacity: the ring's slots.
        device: where the rows are stored (the ring's device).
    """

    GROW = 1.25  # a growth's size, as a multiple of the tails then alive (so the rows in use stay >= 80%)
    LEAST = 1024  # the smallest size allocated (at most the capacity)

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        self.at = torch.full((capacity,), -1, dtype=torch.long, device=device)  # slot -> row here; -1: no tail
        self.rows: dict[str, torch.Tensor] = {}  # per key, [size, ...]
        self.size = 0
        self._owner = torch.zeros(0, dtype=torch.long)  # [size] on the CPU: each row's transition (write index)
        self._head, self._count = 0, 0  # the oldest row, and how many rows from it are in use

    def __len__(self) -> int:
        return self._count

    def write(self, owners: torch.Tensor, rows: dict[str, torch.Tensor], slot: int, m: int) -> None:
        """Store a write's tails, after the ring took its ``m`` transitions from ``slot``: ``owners [k]`` (CPU,
        ascending) are the tails' write indices (the last is the write's last transition), ``rows`` each key's
        ``[k, ...]`` next observations on ``device``, in the ring's dtype."""
        head = min(m, self.capacity - slot)
        self.at[slot : slot + head] = -1  # what the write overwrote is no tail now
        self.at[: m - head] = -1  # (the ring wraps)
        self._drop(oldest=int(owners[-1]) + 1 - self.capacity)
        k = len(owners)
        if self._count + k > self.size:  # the first write sizes it for the ring at its share of tails
            self._resize(max(self._count + k, math.ceil(k / m * self.capacity) if not self.size else 0), rows)
        pos = (self._head + self._count + torch.arange(k)) % self.size
        where = to_device(pos, self.device)
        for key, src in rows.items():
            scatter(self.rows[key], where, src)
        self._owner[pos] = owners
        self.at.index_copy_(0, to_device(owners % self.capacity, self.device), where)
        self._count += k

    def newest(self) -> int:
        """The newest row (the last tail written)."""
        return (self._head + self._count - 1) % self.size

    def pop_newest(self) -> None:
        """Free the newest row: its trajectory went on in the next write, whose first observation is its next one."""
        self.at[int(self._owner[self.newest()]) % self.capacity] = -1
        self._count -= 1

    def next_rows(self, key: str, ring: torch.Tensor, slots: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The next ``key`` ``[*slots.shape, ...]`` of the transitions in ``slots`` (on ``device``), into ``out``
        if given: a tail's own, else the following slot's in ``ring [capacity, ...]`` (in the same trajectory:
        its last stored transition is always a tail)."""
        pos = self.at[slots].reshape(-1)
        own, after = gather(self.rows[key], pos.clamp(min=0)), gather(ring, (slots.reshape(-1) + 1) % self.capacity)
        out = own.new_empty((*slots.shape, *own.shape[1:])) if out is None else out
        choose(pos >= 0, own, after, out=out.view(-1, *own.shape[1:]))
        return out

    def _drop(self, oldest: int) -> None:
        """Free the rows of tails whose transitions left the ring (write index below ``oldest``): the first ones."""
        if not self._count:
            return
        end = self._head + self._count
        dead = int(torch.searchsorted(self._owner[self._head : min(end, self.size)], oldest))
        if end > self.size and dead == self.size - self._head:
            dead += int(torch.searchsorted(self._owner[: end - self.size], oldest))
        self._head = (self._head + dead) % self.size
        self._count -= dead

    def _resize(self, need: int, like: dict[str, torch.Tensor]) -> None:
        """Room for ``need`` rows: the rows in use move, oldest first, to the start of new ones."""
        size = min(self.capacity, max(self.LEAST, math.ceil(self.GROW * need)))
        order = (self._head + torch.arange(self._count)) % max(self.size, 1)
        where = to_device(order, self.device)
        for key, src in like.items():
            rows = src.new_empty((size, *src.shape[1:]))
            if self._count:
                rows[: self._count] = gather(self.rows[key], where)
            self.rows[key] = rows
        owner = torch.zeros(size, dtype=torch.long)
        owner[: self._count] = self._owner[order]
        self.at.index_copy_(0, to_device(owner[: self._count] % self.capacity, self.device), to_device(torch.arange(self._count), self.device))
        self._owner, self.size, self._head = owner, size, 0
