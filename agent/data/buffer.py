"""The replay buffer of both jobs: a ring of transitions, slices inside trajectories, time-major batches.

The representation job stores its collector's batches env-major (``traj_key`` = the collector's
trajectory ids); the online job stores each env step (``traj_key`` = ``episode``). Both sample
``batch_size`` sub-trajectories of ``horizon`` steps and train on them as time-major tensors.
The representation job and pixel online runs store each frame once (``obs_once``): a transition's next
observation is the next transition's observation, so only trajectory ends keep their own (``agent.data.tails``);
frame-stacked pixel runs keep only each observation's newest frame (``frame_stack``, ``agent.data.frames``).
The buffer is not checkpointed: both jobs rebuild it on resume by replaying their data (exact).
:func:`load_buffer` still reads the ``buffer.pt`` files that older online runs wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase

from agent.data.frames import check_shift, frame_slots, newest, padded, stack
from agent.data.rows import gather, to_device
from agent.data.segments import Segments
from agent.data.tails import TailStore
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
    Here the boundaries are kept as the data comes (:class:`~agent.data.segments.Segments`, on the CPU), the
    draws use torch's global generator on the CPU, and the storage and the gathers stay on ``storage_device``
    (the slice indices are copied there through pinned memory: the host never waits for a GPU, see
    :func:`to_device`; but with ``frame_stack``, data on a GPU costs one wait per trajectory it begins).

    Args:
        capacity: transitions kept (a ring: the oldest is overwritten).
        horizon: steps per sampled sub-trajectory ``H``; slices never cross a trajectory.
        batch_size: sub-trajectories per batch ``B``.
        traj_key: the key that tells trajectories apart.
        obs_keys: per-observation keys besides the observation (``[H+1, B, ...]`` in a batch).
        step_keys: per-transition keys read from ``next`` (``[H, B, ...]``; ``terminated`` as float).
        device: where batches go.
        storage_device: where the transitions are stored (a GPU: sampling never leaves it).
        obs_once: store each per-observation key once. Inside a trajectory a transition's next observation
            is the following transition's observation (a collector's data, across its batches too: tested
            against every collector), so a write keeps ``next`` only for each trajectory's last transition in
            it (a "tail": a row's end or an episode's; freed when the next write goes on with its trajectory,
            as an online run's steps do), in a store sized to the tails alive
            (:class:`~agent.data.tails.TailStore`). That cuts the frames copied per write and the memory
            (the representation job's: 0.67x and ~0.7x; an online run's ~0.5x), and gives the same batches
            bit for bit. The premise is checked at the first write, and across writes at the first that goes
            on with a trajectory (a clear error, before anything is stored).
        frame_stack: the observation (``pixels``) stacks this many frames along its first dim, newest last (torchrl's
            ``CatFrames``); with ``obs_once``, store only each one's newest frame and stack them again when
            sampling (:mod:`agent.data.frames`): 1/``frame_stack`` of the frames' memory, the same batches. A
            trajectory whose first stored observation is not a reset's (its frame repeated) gives no slices
            starting in its first ``frame_stack - 1`` transitions: the oldest, once the ring overwrote its
            start, and one that data began mid-episode. The premise (a next observation is its observation
            shifted by one frame) is checked with ``obs_once``'s.
    """

    def __init__(
        self, capacity: int, horizon: int, batch_size: int, traj_key: Key,
        obs_keys: tuple[str, ...] = (), step_keys: tuple[str, ...] = (), device: str | torch.device = "cpu",
        storage_device: str | torch.device = "cpu", obs_once: bool = False, frame_stack: int = 1,
    ) -> None:  # fmt: skip
        if capacity < 1 or horizon < 1 or batch_size < 1:
            raise ValueError(f"capacity, horizon and batch_size must be >= 1, got {capacity}, {horizon}, {batch_size}")
        if not 1 <= frame_stack <= capacity or (frame_stack > 1 and not obs_once):
            raise ValueError(
                f"frame_stack must be in [1, capacity={capacity}] and needs obs_once=True when above 1, "
                f"got {frame_stack} (obs_once={obs_once})"
            )
        self.capacity, self.horizon, self.batch_size, self.traj_key = capacity, horizon, batch_size, traj_key
        self.obs_keys, self.step_keys = obs_keys, step_keys
        self.device, self.storage_device = torch.device(device), torch.device(storage_device)
        self._store: TensorDict | None = None  # [capacity, ...], allocated at the first write
        self._leaves: dict[Key, torch.Tensor] = {}  # its tensors by key, written to and read in place
        self._obs_key = "observation"  # or "pixels", when the first write has them
        self.written = 0  # transitions ever stored; the next goes to slot written % capacity
        self.frame_stack = frame_stack
        self.segments = Segments(frame_stack)  # the trajectories in the ring
        self.obs_once = obs_once
        self._per_obs: list[str] = []  # the per-observation keys (stored as key and ("next", key))
        self._tails: TailStore | None = None  # obs_once: the next observations of trajectory ends
        self._carry_checked = False  # obs_once: the premise across writes was checked (at the first that needs it)

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    @property
    def tails(self) -> int:
        """``obs_once``: how many stored transitions keep a next observation of their own (else all do)."""
        return len(self._tails) if self._tails is not None else len(self)

    def extend(self, data: TensorDictBase) -> int:
        """Store transitions: flat ``[N]``, or a collector batch ``[num_envs, T]`` stored env-major so
        each env's steps stay contiguous (an unbatched tensordict is one transition). Returns the number
        received (all stored, but for the oldest of more than ``capacity`` at once).

        Only the keys batches read are stored (:meth:`_batch_keys`); each write must carry them.
        """
        n = received = data.numel()
        if n == 0:
            return 0
        if self._store is None:
            self._obs_key = "pixels" if "pixels" in data.keys() else "observation"
            self._per_obs = [self._obs_key, *(k for k in self.obs_keys if k != "obs")]
            self._batch_keys(data)  # a clear error for a key it lacks
            rows = data.get(self._obs_key).shape[data.batch_dims :]
            if self.frame_stack > 1 and (not rows or rows[0] % self.frame_stack):
                raise ValueError(
                    f"frame_stack={self.frame_stack} stacks frames along the first dim of {self._obs_key!r}, "
                    f"whose rows are {tuple(rows)}"
                )
        else:
            sources = self._sources(data)
        skip = max(0, n - self.capacity)  # only the newest fit: the rest would be overwritten at once
        keys = data.get(self.traj_key).reshape(n)[skip:].cpu()
        lead = data.batch_dims  # 0 (one unbatched transition: copied by broadcasting) or 1 need no reshape
        ends = None
        if self.obs_once:  # the last transition of each trajectory in this write keeps its next observation
            ends = torch.cat([(keys[1:] != keys[:-1]).nonzero().squeeze(1), torch.tensor([len(keys) - 1])])
            if self._store is None:
                self._check_obs_once(data, n, skip, ends)
        # this write goes on with the ring's newest trajectory: its last tail's next observation is this write's first
        carry = ends is not None and not skip and self.segments.goes_on(keys[0].item())
        if carry and not self._carry_checked and self.segments.length[-1] > 0:  # (frame_stack: a transition with its frames)
            self._check_carry(data, n)
        if self._store is None:  # every check passed: nothing was allocated or written before
            self._store, self._leaves = self._allocate(data)
            sources = self._sources(data)
        if skip:
            self.written += skip
            self.segments.clear()
        slot, m = self.written % self.capacity, n - skip
        head = min(m, self.capacity - slot)
        for key, dst, src in sources:  # leaf by leaf, no op more than needed: each costs a few us (~0.1 ms a step)
            if lead > 1:
                src = src.reshape(n, *src.shape[lead:])
            if skip:
                src = src[skip:]
            if src.device != dst.device:  # e.g. the collection workers' CPU batches into a GPU ring: without a wait
                src = to_device(src, dst.device)
            self._write(dst, src, slot, m, head)
        if ends is not None:
            if carry:
                self._tails.pop_newest()
            self._tails.write(self.written + ends, self._tail_rows(data, n, skip, ends), slot, m)
        self._track(keys, flat(data, self._obs_key, n)[skip:] if self.frame_stack > 1 else None)
        return received

    def _allocate(self, data: TensorDictBase) -> tuple[TensorDict, dict[Key, torch.Tensor]]:
        """The ring ``[capacity]`` for the keys batches read, as uninitialised memory (as ``torch.empty``: the
        pages fill as the ring does), and its tensors by key. ``obs_once``: without the per-obs keys' ``next``
        (the tails' store keeps those it needs); ``frame_stack``: the observation's newest frame."""
        first = data.reshape(-1)[:1].select(*self._batch_keys(data)).to(self.storage_device)
        if self.obs_once:
            first = first.exclude(*(("next", k) for k in self._per_obs))
            self._tails = TailStore(self.capacity, self.storage_device)
        if self.frame_stack > 1:  # each observation's newest frame
            frames = newest(first.get(self._obs_key), self.frame_stack)
            first = first.exclude(self._obs_key).set(self._obs_key, frames)
        store = first.apply(lambda t: t.new_empty((self.capacity, *t.shape[1:])), batch_size=[self.capacity])
        return store, {k: store.get(k) for k in store.keys(include_nested=True, leaves_only=True)}

    def _sources(self, data: TensorDictBase) -> list[tuple[Key, torch.Tensor, torch.Tensor]]:
        """``(key, ring, data's tensor)`` per key of the ring: each found, and shaped as the ring's rows, before
        any write (``obs_once``: the per-obs keys' ``next`` too, shaped as their key's rows; ``frame_stack``: the
        observation's newest frame)."""
        sources = [(key, dst, data.get(key, None)) for key, dst in self._leaves.items()]
        nxt = [(("next", k), self._leaves[k], data.get(("next", k), None)) for k in self._per_obs] if self.obs_once else []
        missing = [key for key, _, src in sources + nxt if src is None]
        if missing:
            raise KeyError(f"the replay buffer stores {missing}, which the data to store lacks")
        lead = data.batch_dims
        if self.frame_stack > 1:  # the observation's newest frame
            sources = [(key, dst, self._frames(key, src, lead)) for key, dst, src in sources]
            nxt = [(key, dst, self._frames(key, src, lead)) for key, dst, src in nxt]
        wrong = [f"{key} {tuple(src.shape[lead:])} (stored {tuple(dst.shape[1:])})" for key, dst, src in sources + nxt if src.shape[lead:] != dst.shape[1:]]
        wrong += [f"{key} {src.dtype} (stored {dst.dtype})" for key, dst, src in nxt if src.dtype != dst.dtype]  # one ring for both
        if wrong:
            raise ValueError(f"the data to store has other shapes (or next dtypes) than the replay buffer's rows: {', '.join(wrong)}")
        return sources

    def _frames(self, key: Key, t: torch.Tensor, lead: int) -> torch.Tensor:
        """``frame_stack``: the newest frame of the observation key's (or its next's) rows ``t`` (after ``lead``
        batch dims); another key's ``t`` as is."""
        return newest(t, self.frame_stack, lead) if key in (self._obs_key, ("next", self._obs_key)) else t

    def _tail_rows(self, data: TensorDictBase, n: int, skip: int, ends: torch.Tensor) -> dict[str, torch.Tensor]:
        """``obs_once``: each per-obs key's next observations ``[k, ...]`` at a write's trajectory ends ``ends [k]``
        (of its ``n`` transitions, the first ``skip`` not stored), on the storage device."""
        rows = {}
        for key in self._per_obs:
            src = self._frames(key, flat(data, ("next", key), n)[skip:], 1)
            rows[key] = to_device(src.index_select(0, to_device(ends, src.device)), self.storage_device)
        return rows

    @staticmethod
    def _write(dst: torch.Tensor, src: torch.Tensor, slot: int, m: int, head: int) -> None:
        """``m`` rows of ``src`` into the ring ``dst`` from ``slot`` (``head`` of them fit before its end)."""
        if head == m:
            dst[slot : slot + m].copy_(src)
        else:  # the ring wraps
            dst[slot:].copy_(src[:head])
            dst[: m - head].copy_(src[head:])

    def _check_obs_once(self, data: TensorDictBase, n: int, skip: int, ends: torch.Tensor) -> None:
        """``obs_once``'s premise on a write of ``n`` transitions (the first ``skip`` not stored; ``ends [k]``: the
        kept ones' trajectory ends): inside each trajectory, ``next`` equals the following observation."""
        inner = torch.ones(n - skip, dtype=torch.bool)
        inner[ends] = False  # i and i + 1 in one trajectory
        for key in self._per_obs:
            obs, nxt = (flat(data, k, n)[skip:] for k in (key, ("next", key)))
            if obs.dtype != nxt.dtype or obs.shape != nxt.shape:
                raise ValueError(
                    f"obs_once stores {key!r} and its next one in one ring, but they differ: {obs.dtype} "
                    f"{tuple(obs.shape[1:])} and {nxt.dtype} {tuple(nxt.shape[1:])}"
                )  # fmt: skip
            where = inner.nonzero().squeeze(1).to(obs.device)
            if not torch.equal(nxt[where], obs[where + 1]):
                raise ValueError(
                    f"obs_once stores each observation once, but in this data a transition's next {key!r} differs "
                    "from the following transition's inside one trajectory; use obs_once=False for it"
                )
            if key == self._obs_key and self.frame_stack > 1:
                check_shift(obs, nxt, self.frame_stack, key)

    def _check_carry(self, data: TensorDictBase, n: int) -> None:
        """``obs_once``'s premise across writes, at the first write that goes on with a stored trajectory (one
        host wait, once): its first observation is the next observation stored for the previous transition."""
        index = self._index(torch.tensor([self.written - 1]), self.segments.floor[-1:], 1)
        for key in self._per_obs:
            first = flat(data, key, n)[0]
            if not torch.equal(first.to(self.storage_device), self._sequence(key, index)[1, 0]):
                raise ValueError(
                    f"obs_once stores each observation once, but this write's first {key!r} differs from the next one "
                    "stored for the transition before it, in the same trajectory; use obs_once=False for this data"
                )
        self._carry_checked = True

    def _batch_keys(self, data: TensorDictBase) -> list[Key]:
        """The keys :meth:`sample` reads, and the trajectory key; a clear error when ``data`` lacks one."""
        per_obs = self._per_obs  # (set from the first write)
        keys = ["action", self.traj_key, *per_obs, *(("next", k) for k in per_obs), *(("next", k) for k in self.step_keys)]
        missing = [k for k in keys if data.get(k, None) is None]
        if missing:
            raise KeyError(f"the replay buffer needs {missing}, which the data to store lacks")
        return list(dict.fromkeys(keys))

    def _track(self, keys: torch.Tensor, obs: torch.Tensor | None = None) -> None:
        """Extend the trajectories by the ``keys [n]`` just written (``frame_stack``: and their observations
        ``obs [n, ...]``), then drop what was overwritten."""
        def reset(starts: torch.Tensor) -> torch.Tensor:  # frame_stack: which new trajectories begin with a reset's stack
            return padded(obs.index_select(0, to_device(starts, obs.device)), self.frame_stack)  # (data on a GPU: one wait)

        self.segments.add(keys, self.written, reset)
        self.written += keys.numel()
        self.segments.drop(self.written - len(self))

    def slices(self) -> torch.Tensor:
        """Storage slots ``[H, B]`` of one batch's sub-trajectories (time-major), on the storage device."""
        return self._draw()[self.frame_stack - 1 :]

    def _draw(self) -> torch.Tensor:
        """Draw one batch's sub-trajectories: the storage slots ``[H + frame_stack - 1, B]`` of their observations'
        frames (:meth:`_index`)."""
        first, floor = self.segments.draw(self.horizon, self.batch_size)
        return self._index(first, floor, self.horizon)

    def _index(self, first: torch.Tensor, floor: torch.Tensor, steps: int) -> torch.Tensor:
        """Storage slots ``[steps + frame_stack - 1, B]`` of ``steps`` transitions from write index ``first [B]``
        (CPU), in trajectories whose first observation is stored at ``floor [B]``: the frames their observations
        stack, the last ``steps`` rows the transitions' own (:func:`~agent.data.frames.frame_slots`)."""
        return to_device(frame_slots(first, floor, steps, self.frame_stack, self.capacity), self.storage_device)

    def _sequence(self, key: str, index: torch.Tensor) -> torch.Tensor:
        """A per-obs key's observations ``[S + 1, B, ...]`` along sub-trajectories whose frames' slots are
        ``index`` (:meth:`_index`): each step's, then the last step's next one, gathered in place (a cat would
        copy it all again)."""
        k = self.frame_stack if key == self._obs_key else 1
        ring, idx = self._leaves[key], index[self.frame_stack - 1 :]  # idx [S, B]: the transitions' slots
        s, rows = len(idx), ring.shape[1:]
        out = ring.new_empty((s + 1, *idx.shape[1:], rows[0] * k, *rows[1:]) if k > 1 else (s + 1, *idx.shape[1:], *rows))
        if not self.obs_once:  # the slice's first observation, then each step's next one
            gather(ring, idx[:1], out=out[:1])
            gather(self._leaves["next", key], idx, out=out[1:])
        elif k == 1:  # each step's observation, then the last step's next one
            gather(ring, idx, out=out[:s])
            self._tails.next_rows(key, ring, idx[-1], out=out[s])
        else:  # their frames, then the last step's next frame, stacked
            frames = ring.new_empty((s + k, *idx.shape[1:], *rows))
            gather(ring, index, out=frames[: s + k - 1])
            self._tails.next_rows(key, ring, idx[-1], out=frames[-1])
            stack(frames, k, out)
        return out

    def sample(self) -> dict[str, torch.Tensor]:
        """A batch: ``obs [H+1, B, ...]``, ``action [H, B, A]``, the obs and step keys, on ``device``."""
        if self._store is None:
            raise RuntimeError("the replay buffer is empty")
        leaf, index = self._leaves, self._draw()
        idx = index[self.frame_stack - 1 :]  # [H, B]
        batch = {"obs": self._sequence(self._obs_key, index), "action": gather(leaf["action"], idx)}
        for key in self.obs_keys:
            if key != "obs":
                batch[key] = self._sequence(key, index)
        for key in self.step_keys:
            batch[key] = gather(leaf["next", key], idx)
        if "terminated" in batch:
            batch["terminated"] = batch["terminated"].float()
        return {k: to_device(v, self.device) for k, v in batch.items()}

    def stored(self) -> TensorDict:
        """Every stored transition (the keys batches read), oldest first ``[n]`` (a copy): ``n = len(self)``, but
        with ``frame_stack`` those whose stacks lack frames are left out (the first ``frame_stack - 1`` of a
        trajectory whose first stored observation is not a reset's)."""
        if self._store is None:
            return TensorDict({}, batch_size=[0])
        index = self._index(*self.segments.writes(), 1)  # [frame_stack, n]: without the transitions that lack frames
        out = self._store[index[-1]]
        if self.obs_once:
            for key in self._per_obs:
                pair = self._sequence(key, index)  # [2, n, ...]: the observations and the next ones
                out = out.exclude(key).update({key: pair[0], ("next", key): pair[1]})
        return out


def flat(data: TensorDictBase, key: Key, n: int) -> torch.Tensor:
    """``data``'s ``key`` as ``n`` flat rows ``[n, ...]`` (``data``: ``n`` transitions, batched any way, env-major)."""
    t = data.get(key)
    return t.reshape(n, *t.shape[data.batch_dims :])


def save_buffer(buffer: ReplayBuffer, path: str | Path, step: int) -> Path:
    """Write the stored transitions of ``buffer`` to the file ``path`` (atomically), oldest first: the format
    of the ``buffer.pt`` files older online runs wrote beside their checkpoints (``step`` is the agent step
    of the matching checkpoint). Refilling an empty buffer with them gives the same contents. Not for a
    ``frame_stack`` buffer: a refill would begin mid-episode, whose first stacks lack frames."""
    if buffer.frame_stack > 1:
        raise ValueError("save_buffer writes the format of older runs, which never stored frame stacks (a resume replays the run)")
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
