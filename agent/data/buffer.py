"""The replay buffer of both jobs: a ring of transitions, slices inside trajectories, time-major batches.

The representation job stores its collector's batches env-major (``traj_key`` = the collector's
trajectory ids); the online job stores each env step (``traj_key`` = ``episode``). Both sample
``batch_size`` sub-trajectories of ``horizon`` steps and train on them as time-major tensors.
The buffer is not checkpointed: both jobs rebuild it on resume by replaying their data (exact).
:func:`load_buffer` still reads the ``buffer.pt`` files that older online runs wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase

from agent.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

Key = str | tuple[str, ...]


class ReplayBuffer:
    """Transitions in a ring, sampled as time-major sub-trajectories (TD-MPC2's slice sampling).

    A trajectory is a run of consecutively stored transitions with the same ``traj_key`` (kept across
    :meth:`extend` calls). A batch draws ``batch_size`` trajectories of at least ``horizon`` transitions
    uniformly (with replacement), then a start inside each uniformly: the distribution of torchrl's
    ``SliceSampler(strict_length=True)``, which this buffer replaced (that one recomputed the trajectory
    boundaries over the whole storage after every write: ~4 ms per online step at 1M transitions).
    Here the boundaries are kept as the data comes (a few small tensors on the CPU), the draws use torch's
    global generator on the CPU, and the storage and the gathers stay on ``storage_device`` (the slice
    indices are copied there: no host sync).

    Args:
        capacity: transitions kept (a ring: the oldest is overwritten).
        horizon: steps per sampled sub-trajectory ``H``; slices never cross a trajectory.
        batch_size: sub-trajectories per batch ``B``.
        traj_key: the key that tells trajectories apart.
        obs_keys: per-observation keys besides the observation (``[H+1, B, ...]`` in a batch).
        step_keys: per-transition keys read from ``next`` (``[H, B, ...]``; ``terminated`` as float).
        device: where batches go.
        storage_device: where the transitions are stored (a GPU: sampling never leaves it).
    """

    def __init__(
        self, capacity: int, horizon: int, batch_size: int, traj_key: Key,
        obs_keys: tuple[str, ...] = (), step_keys: tuple[str, ...] = (), device: str | torch.device = "cpu",
        storage_device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        if capacity < 1 or horizon < 1 or batch_size < 1:
            raise ValueError(f"capacity, horizon and batch_size must be >= 1, got {capacity}, {horizon}, {batch_size}")
        self.capacity, self.horizon, self.batch_size, self.traj_key = capacity, horizon, batch_size, traj_key
        self.obs_keys, self.step_keys = obs_keys, step_keys
        self.device, self.storage_device = torch.device(device), torch.device(storage_device)
        self._store: TensorDict | None = None  # [capacity, ...], allocated at the first write
        self.written = 0  # transitions ever stored; the next goes to slot written % capacity
        self._seg_start = torch.zeros(0, dtype=torch.long)  # trajectories, oldest first: first write index
        self._seg_len = torch.zeros(0, dtype=torch.long)  # and length (all in the ring)
        self._last_key: object = None  # the newest trajectory's key (it may go on at the next write)

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def extend(self, data: TensorDictBase) -> int:
        """Store transitions: flat ``[N]``, or a collector batch ``[num_envs, T]`` stored env-major so
        each env's steps stay contiguous. Returns the number received (all stored, but for the oldest of more
        than ``capacity`` at once)."""
        flat = data.reshape(-1)
        n = received = flat.numel()
        if n == 0:
            return 0
        if n > self.capacity:  # only the newest fit: the rest would be overwritten at once, and all stored before
            self.written += n - self.capacity
            flat, n = flat[n - self.capacity :], self.capacity
            self._seg_start, self._seg_len, self._last_key = self._seg_start[:0], self._seg_len[:0], None
        if self._store is None:  # uninitialised memory, as torch.empty: the pages fill as the ring does
            self._store = flat[:1].to(self.storage_device).apply(lambda t: t.new_empty((self.capacity, *t.shape[1:])), batch_size=[self.capacity])
        slot = self.written % self.capacity
        head = min(n, self.capacity - slot)
        self._store[slot : slot + head] = flat[:head].to(self.storage_device)
        if head < n:  # the ring wraps
            self._store[: n - head] = flat[head:].to(self.storage_device)
        self._track(flat[self.traj_key].reshape(n).cpu())
        return received

    def _track(self, keys: torch.Tensor) -> None:
        """Extend the trajectory bookkeeping by the ``keys [n]`` just written, then drop what was overwritten."""
        n = keys.numel()
        change = torch.ones(n, dtype=torch.bool)
        change[1:] = keys[1:] != keys[:-1]
        starts = change.nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([n]))
        if len(self._seg_len) and self._last_key == keys[0].item():  # the newest trajectory goes on
            self._seg_len[-1] += lengths[0]
            starts, lengths = starts[1:], lengths[1:]
        self._seg_start = torch.cat([self._seg_start, starts + self.written])
        self._seg_len = torch.cat([self._seg_len, lengths])
        self._last_key = keys[-1].item()
        self.written += n
        oldest = self.written - len(self)
        if self._seg_start[0] < oldest:  # overwritten: whole trajectories dropped, the oldest cut
            keep = self._seg_start + self._seg_len > oldest
            self._seg_start, self._seg_len = self._seg_start[keep], self._seg_len[keep]
            cut = oldest - self._seg_start[0]
            self._seg_start[0] += cut
            self._seg_len[0] -= cut

    def slices(self) -> torch.Tensor:
        """Storage slots ``[H, B]`` of one batch's sub-trajectories (time-major), on the storage device."""
        h = self.horizon
        fits = self._seg_len >= h
        if not bool(fits.any()):
            raise RuntimeError(f"no trajectory of at least horizon={h} transitions among the {len(self)} stored")
        start, length = self._seg_start[fits], self._seg_len[fits]
        pick = torch.randint(len(start), (self.batch_size,))
        offset = (torch.rand(self.batch_size) * (length[pick] - h + 1)).floor().long()
        first = start[pick] + offset  # [B] write indices
        return ((first[None] + torch.arange(h)[:, None]) % self.capacity).to(self.storage_device)

    def sample(self) -> dict[str, torch.Tensor]:
        """A batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, the obs and step keys, on ``device``."""
        if self._store is None:
            raise RuntimeError("the replay buffer is empty")
        store, idx = self._store, self.slices()  # idx [H, B]; only the keys a batch needs are gathered

        def seq(key: str) -> torch.Tensor:  # the slice's first observation, then each step's next one
            return torch.cat([store[key][idx[0]][None], store["next", key][idx]])

        batch = {"obs": seq("pixels" if "pixels" in store.keys() else "observation"), "action": store["action"][idx]}
        for key in self.obs_keys:
            if key != "obs":
                batch[key] = seq(key)
        for key in self.step_keys:
            batch[key] = store["next", key][idx]
        if "terminated" in batch:
            batch["terminated"] = batch["terminated"].float()
        return {k: v.to(self.device, non_blocking=self.device.type == "cuda") for k, v in batch.items()}

    def stored(self) -> TensorDict:
        """Every stored transition, oldest first ``[len(self)]`` (a copy)."""
        if self._store is None:
            return TensorDict({}, batch_size=[0])
        first = self.written % self.capacity if self.written > self.capacity else 0
        return self._store[((torch.arange(len(self)) + first) % self.capacity).to(self.storage_device)]


def save_buffer(buffer: ReplayBuffer, path: str | Path, step: int) -> Path:
    """Write the stored transitions of ``buffer`` to the file ``path`` (atomically), oldest first: the format
    of the ``buffer.pt`` files older online runs wrote beside their checkpoints (``step`` is the agent step
    of the matching checkpoint). Refilling an empty buffer with them gives the same contents."""
    n = len(buffer)
    data = buffer.stored().cpu().to_dict() if n else {}
    return save_checkpoint(path, {"step": int(step), "transitions": n, "data": data})


def load_buffer(buffer: ReplayBuffer, path: str | Path, step: int) -> bool:
    """Refill an empty ``buffer`` from :func:`save_buffer`'s file if it matches ``step``.

    Returns False, with a warning, when there is no saved buffer, it cannot be read, or it belongs
    to another step (a kill between writing the buffer and the checkpoint): the run then goes on
    and refills the buffer by acting, as it would without a saved one. When the saved buffer holds
    more transitions than ``buffer`` can (a smaller ``data.buffer_size``), the newest are kept.
    """
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
        keep = min(n, buffer.capacity)
        if keep < n:
            log.warning("replay buffer %s holds %d transitions, more than data.buffer_size; keeping the newest %d", path, n, keep)
        buffer.extend(data[n - keep :])
    return True
