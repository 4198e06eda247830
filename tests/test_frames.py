"""The replay buffer's ``frame_stack``: one frame stored per transition, the stacks rebuilt when sampling."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from agent.data.buffer import ReplayBuffer, save_buffer
from envs import make_env
from envs.control import stacked_frames
from tests.conftest import same_batches

C = 2  # channels per synthetic frame


def frame(v: int) -> torch.Tensor:
    """A distinct uint8 frame ``[C, 2, 2]`` for each number below 65,536."""
    return torch.tensor([v & 255, v >> 8], dtype=torch.uint8)[:, None, None].expand(C, 2, 2)


def stacked_stream(n: int, k: int, seed: int = 0, first: int | None = None, mid: bool = False) -> TensorDict:
    """``n`` transitions of episodes 1-6 steps long (the first ``first`` long if given), ``pixels`` stacking the
    ``k`` newest frames as ``CatFrames`` does (a reset's frame repeated; ``mid``: the first episode began before
    the data, with frames of its own). Frame ``i`` is step ``i``'s; a next stack adds the following step's
    frame, or a terminal one at an episode's end. ``action`` numbers the transitions."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (n,), generator=g)
    if first is not None:
        lengths[0] = first
    episode = torch.repeat_interleave(torch.arange(n), lengths)[:n]
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = episode[1:] != episode[:-1]
    obs, nxt, history = [], [], []
    for i in range(n):
        if i == 0 or episode[i] != episode[i - 1]:
            history = [2000 + j for j in range(k - 1)] + [i] if mid and i == 0 else [i] * k
        else:
            history = history[1:] + [i]
        obs.append(torch.cat([frame(v) for v in history]))
        nxt.append(torch.cat([frame(v) for v in history[1:] + [1000 + i if last[i] else i + 1]]))
    i = torch.arange(n)
    count_next = torch.where(last, 1000 + i, i + 1)
    return TensorDict(
        {"pixels": torch.stack(obs), "count": i, "action": i[:, None].float(), "episode": episode,
         "next": {"pixels": torch.stack(nxt), "count": count_next, "reward": i.float(), "episode": episode}},
        [n],
    )  # fmt: skip


def buffers(k: int, capacity: int = 40, batch: int = 64) -> tuple[ReplayBuffer, ReplayBuffer]:
    """A buffer storing whole stacks and both observations, and one storing a frame per transition."""
    kw = dict(obs_keys=("count",), step_keys=("reward",))
    return ReplayBuffer(capacity, 2, batch, "episode", **kw), ReplayBuffer(capacity, 2, batch, "episode", obs_once=True, frame_stack=k, **kw)


def lacking_frames(plain: ReplayBuffer, k: int) -> list[int]:
    """The transitions (numbers) whose stacks a frame-per-transition ring cannot rebuild: the first ``k - 1``
    stored of the oldest trajectory when its first stored stack is not a reset's."""
    stored = plain.stored()
    first = stored["pixels"][0].reshape(k, -1)
    if (first == first[-1]).all():
        return []
    same = stored["episode"] == stored["episode"][0]
    return [int(a) for a in stored["action"][same][: k - 1, 0]]


def check_batch(buf: ReplayBuffer, data: TensorDict, seed: int) -> None:
    """Every observation of a batch is the stack the data gave its transition, and the last one's next."""
    torch.manual_seed(seed)
    batch = buf.sample()
    ids = batch["action"][..., 0].long()  # [H, B] transition numbers
    assert torch.equal(batch["obs"][:-1], data["pixels"][ids]) and torch.equal(batch["obs"][-1], data["next", "pixels"][ids[-1]])
    assert torch.equal(batch["count"][:-1], data["count"][ids]) and torch.equal(batch["count"][-1], data["next", "count"][ids[-1]])


@pytest.mark.parametrize("mode", ["flat", "env-major", "one-at-a-time"])
@pytest.mark.parametrize(("k", "mid"), [(3, False), (2, False), (3, True)], ids=["3-frames", "2-frames", "3-frames-mid-episode"])
def test_one_frame_per_transition_gives_the_stacks_and_the_same_batches(mode, k, mid):
    """Writes that wrap a 40-slot ring, episodes ending inside and across writes, one longer than the ring (and
    one that began before the data): each stored stack and next stack rebuilt, and while every trajectory in
    the ring began at a reset, the same batches as the buffer that stores both whole; after, no slice starts
    where a stack lacks frames, and every batch holds the data's stacks."""
    data = stacked_stream(150, k, first=60, mid=mid)
    plain, frames = buffers(k)
    sizes = {"flat": [7, 1, 13, 45, 3, 30, 51], "env-major": [8, 12, 44, 36, 50], "one-at-a-time": [1] * 150}[mode]
    start, equal_draws, checked = 0, 0, 0
    for n, size in enumerate(sizes):
        part = data[start : start + size]
        if mode == "env-major" and size % 4 == 0:
            part = part.reshape(4, size // 4)
        start += size
        assert plain.extend(part) == frames.extend(part) == size and plain.written == frames.written
        want, got = plain.stored(), frames.stored()
        lacking = lacking_frames(plain, k)
        keep = ~torch.isin(want["action"][:, 0].long(), torch.tensor(lacking, dtype=torch.long))
        assert len(got) == len(want) - len(lacking) and (got == want[keep]).all()
        if not any(frames.segments.length >= 2):
            continue
        if not lacking:
            assert same_batches(plain, frames, seed=n)
            equal_draws += 1
        else:
            check_batch(frames, data, seed=n)
            checked += 1
    assert start == 150 and equal_draws >= (0 if mid else 3) and checked >= 1  # (mid: its first episode lacks frames)
    assert frames._leaves["pixels"].shape == (40, C, 2, 2) and frames._tails.rows["pixels"].shape[1:] == (C, 2, 2)


def test_no_slice_starts_where_a_stack_lacks_frames():
    """Once the ring overwrote the start of its oldest trajectory, slices start anywhere but in its first
    ``k - 1`` stored transitions; every other start is drawn as the buffer storing whole stacks draws it."""
    k, data = 3, stacked_stream(60, 3, first=30, seed=2)
    plain, frames = buffers(k, capacity=40, batch=20_000)
    plain.extend(data[:25])
    frames.extend(data[:25])
    plain.extend(data[25:])
    frames.extend(data[25:])  # steps 20..59 stored: episode 0 lost its first 20 (and its next 2 their frames)
    lacking = lacking_frames(plain, k)
    assert lacking == [20, 21]
    torch.manual_seed(0)
    want = set(plain.sample()["action"][0, :, 0].long().tolist())
    torch.manual_seed(0)
    got = set(frames.sample()["action"][0, :, 0].long().tolist())
    assert got == want - set(lacking) and len(got) > 20
    check_batch(frames, data, seed=1)


def test_frames_of_a_real_pixel_task_stored_one_per_step():
    """DMC cartpole's 64x64 frames stacked 3 (episodes of 4 steps), one step per write as an online run does:
    the same batches and stored transitions as storing whole stacks, in a third of the frames' memory."""
    env = make_env({"task": {"suite": "dmc", "name": "cartpole-swingup", "obs_type": "pixels", "episode_length": 8}, "seed": 0})
    k = stacked_frames(env)
    assert k == 3
    torch.manual_seed(0)
    data = env.rollout(30, break_when_any_done=False)
    data["episode"] = data["next", "episode"] = torch.cumsum(data["next", "done"].reshape(30).long(), 0) - data["next", "done"].reshape(30).long()
    kw = dict(step_keys=("reward",))
    plain, frames = ReplayBuffer(100, 3, 32, "episode", **kw), ReplayBuffer(100, 3, 32, "episode", obs_once=True, frame_stack=k, **kw)
    for t in range(30):
        plain.extend(data[t])
        frames.extend(data[t])
    assert (plain.stored() == frames.stored()).all()
    assert all(same_batches(plain, frames, seed=s) for s in range(3))
    assert frames._leaves["pixels"].shape == (100, 3, 64, 64) and plain._leaves["pixels"].shape == (100, 9, 64, 64)
    assert stacked_frames(make_env({"task": {"suite": "counting", "target": 4}, "seed": 0})) == 1


def test_frame_stack_refuses_what_it_cannot_store_before_any_write():
    with pytest.raises(ValueError, match="needs obs_once=True"):
        ReplayBuffer(40, 2, 4, "episode", frame_stack=3)
    for bad in (0, 41):
        with pytest.raises(ValueError, match=r"frame_stack must be in \[1, capacity=40\]"):
            ReplayBuffer(40, 2, 4, "episode", obs_once=True, frame_stack=bad)
    data = stacked_stream(20, 3)
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True, frame_stack=4)
    with pytest.raises(ValueError, match=r"frame_stack=4 stacks frames along the first dim of 'pixels', whose rows are \(6, 2, 2\)"):
        buf.extend(data)
    assert buf._store is None
    unshifted = data.clone()
    for key in ("pixels", ("next", "pixels")):  # each stack's oldest frame changed: a next stack is still the
        unshifted[key][:, :C] += 1  # following stack, but not its observation's shifted
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True, frame_stack=3)
    with pytest.raises(ValueError, match="next 'pixels' is not its observation shifted by one frame of 2 channels"):
        buf.extend(unshifted)
    assert buf._store is None and len(buf) == 0


def test_frame_stack_refuses_a_write_that_goes_on_with_other_earlier_frames():
    """Across writes the whole first stack is checked against the one rebuilt for the stored trajectory."""
    data = stacked_stream(30, 3, first=30)  # one episode
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True, frame_stack=3)
    buf.extend(data[:10])
    bad = data[10:20].clone()
    bad["pixels"][0, :C] += 1  # its newest frame is the stored next frame, its oldest is not
    with pytest.raises(ValueError, match="this write's first 'pixels' differs from the next one stored"):
        buf.extend(bad)
    assert buf.written == 10
    buf.extend(data[10:20])
    assert (buf.stored() == data[:20].select(*buf.stored().keys(True, True))).all()


def test_the_old_buffer_file_format_is_not_written_for_frame_stacks(tmp_path):
    """``save_buffer`` (the ``buffer.pt`` of older runs) would refill a ring mid-episode, whose stacks lack frames."""
    _, frames = buffers(3)
    frames.extend(stacked_stream(20, 3))
    with pytest.raises(ValueError, match="never stored frame stacks"):
        save_buffer(frames, tmp_path / "buffer.pt", 20)
    assert not (tmp_path / "buffer.pt").exists()
