"""Frame-stacked observations kept one frame per transition, stacked again when a batch is gathered.

A pixel task's observation stacks its ``k`` newest frames along its first dim (torchrl's ``CatFrames``:
``[k * C, H, W]``, newest last, an episode's first frame repeated before it). Inside a trajectory each
observation is the one before it shifted by a frame, so a replay ring needs only each transition's newest
frame ``[C, H, W]``: an observation is the frames of its transition and the ``k - 1`` before it, where those
before its trajectory's first stored observation ("floor") are that observation's (a reset's repeats). A
trajectory whose first stored observation is not such a reset stack (the ring overwrote its start, or the
data began mid-episode) keeps its floor at that observation and gives no slices starting in its first ``k - 1``
transitions, whose earlier frames it lacks.
"""

from __future__ import annotations

import torch


def newest(t: torch.Tensor, k: int, dim: int = 1) -> torch.Tensor:
    """The newest frame of stacked observations: a view of the last ``C`` of ``k * C`` along ``dim``."""
    c = t.shape[dim] // k
    return t.narrow(dim, t.shape[dim] - c, c)


def padded(obs: torch.Tensor, k: int) -> torch.Tensor:
    """Which stacked observations ``obs [n, k * C, ...]`` are ``k`` copies of their newest frame (a reset's),
    as ``bool [n]`` on the CPU. Every frame before such an observation, in its stacks, is that frame too."""
    frames = obs.reshape(len(obs), k, -1)
    return (frames == frames[:, -1:]).flatten(1).all(1).cpu()


def check_shift(obs: torch.Tensor, nxt: torch.Tensor, k: int, key: str) -> None:
    """A clear error unless each next observation ``nxt [n, k * C, ...]`` is its observation ``obs`` shifted by
    one frame (a new one appended): the premise of storing one frame per transition."""
    c = obs.shape[1] // k
    if not torch.equal(nxt[:, : obs.shape[1] - c], obs[:, c:]):
        raise ValueError(
            f"frame_stack={k} stores one frame per transition, but in this data a next {key!r} is not its "
            f"observation shifted by one frame of {c} channels; use frame_stack=1 for it"
        )


def frame_slots(first: torch.Tensor, floor: torch.Tensor, steps: int, k: int, capacity: int) -> torch.Tensor:
    """Ring slots ``[steps + k - 1, B]`` of the frames that the observations of ``steps`` transitions from write
    index ``first [B]`` stack: from ``k - 1`` before ``first``, none before ``floor [B]`` (its trajectory's
    first stored observation, whose frame stands for those before it). The last ``steps`` rows are the
    transitions' own slots."""
    writes = first - (k - 1) + torch.arange(steps + k - 1)[:, None]
    if k > 1:
        writes = writes.maximum(floor)
    return writes % capacity


def stack(frames: torch.Tensor, k: int, out: torch.Tensor) -> torch.Tensor:
    """Observations ``out [S, B, k * C, ...]`` from consecutive frames ``frames [S + k - 1, B, C, ...]``:
    observation ``t`` stacks frames ``t .. t + k - 1``, newest last."""
    c, s = frames.shape[2], len(out)
    for j in range(k):
        out[:, :, j * c : (j + 1) * c].copy_(frames[j : j + s])
    return out
