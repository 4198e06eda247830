"""The replay buffer of both jobs: storage, slice sampler, and time-major batches on the device.

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
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

from agent.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class ReplayBuffer:
    """Transitions sampled as time-major sub-trajectories.

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
        self, capacity: int, horizon: int, batch_size: int, traj_key: str | tuple[str, ...],
        obs_keys: tuple[str, ...] = (), step_keys: tuple[str, ...] = (), device: str | torch.device = "cpu",
        storage_device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        self.horizon, self.obs_keys, self.step_keys, self.device = horizon, obs_keys, step_keys, torch.device(device)
        self.rb = TensorDictReplayBuffer(
            storage=LazyTensorStorage(capacity, device=torch.device(storage_device)),
            sampler=SliceSampler(slice_len=horizon, traj_key=traj_key, strict_length=True, cache_values=True),
            batch_size=batch_size * horizon,
        )

    def __len__(self) -> int:
        return len(self.rb)

    def extend(self, data: TensorDictBase) -> int:
        """Store transitions: flat ``[N]``, or a collector batch ``[num_envs, T]`` stored env-major so
        each env's steps stay contiguous. Returns the number stored."""
        flat = data.reshape(-1)
        self.rb.extend(flat)
        return flat.numel()

    def sample(self) -> dict[str, torch.Tensor]:
        """A batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, the obs and step keys, on ``device``."""
        batch = to_time_major(self.rb.sample(), self.horizon, self.obs_keys, self.step_keys)
        if "terminated" in batch:
            batch["terminated"] = batch["terminated"].float()
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def to_time_major(
    sample: TensorDictBase, horizon: int, keys: tuple[str, ...], step_keys: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """A flat slice sample ``[B*H]`` -> time-major tensors.

    Returns ``obs [H+1, B, ...]`` (the slice's observations, ``pixels`` or ``observation``,
    followed by the last step's next observation), ``action [H, B, A]``, each of ``keys`` per
    observation ``[H+1, B, ...]`` and each of ``step_keys`` per transition ``[H, B, ...]`` (read
    from ``next``, e.g. ``reward``, ``terminated``).
    """
    s = sample.reshape(-1, horizon)  # [B, H]

    def seq(key: str) -> torch.Tensor:
        return torch.cat([s[key][:, :1], s["next", key]], 1).transpose(0, 1).contiguous()

    out = {"obs": seq("pixels") if "pixels" in s.keys() else seq("observation")}
    out["action"] = s["action"].transpose(0, 1).contiguous()
    for key in keys:
        if key != "obs":
            out[key] = seq(key)
    for key in step_keys:
        out[key] = s["next", key].transpose(0, 1).contiguous()
    return out


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
