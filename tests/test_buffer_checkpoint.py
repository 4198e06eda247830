"""Replay buffer saved with a checkpoint: same contents and overwrite order, clear fallback if unusable."""

from __future__ import annotations

import logging

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from agent.data.buffer import ReplayBuffer, load_buffer, save_buffer
from agent.run.checkpoint import save_checkpoint


def make_buffer(capacity: int) -> ReplayBuffer:
    return ReplayBuffer(capacity, horizon=2, batch_size=4, traj_key="episode", step_keys=("episode", "reward"))


def transitions(start: int, n: int, episode: int) -> TensorDict:
    """``n`` transitions numbered ``start..start+n-1`` (``obs``, and the frames), with a nested ``next``."""
    t = torch.arange(start, start + n)

    def frames(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, 1, 1, 1).expand(n, 3, 4, 4).to(torch.uint8)

    return TensorDict(
        {
            "obs": t.float(), "pixels": frames(t), "action": t.float()[:, None], "episode": torch.full((n,), episode),
            "next": {"pixels": frames(t + 1), "reward": t.float().unsqueeze(-1) / 10, "episode": torch.full((n,), episode)},
        },
        [n],
    )  # fmt: skip


def fill(buffer: ReplayBuffer, lengths: list[int]) -> int:
    step = 0
    for episode, n in enumerate(lengths):
        buffer.extend(transitions(step, n, episode))
        step += n
    return step


def stored(buffer: ReplayBuffer) -> list[int]:
    return [int(x) for x in buffer.stored()["action"]]  # oldest first (the action is the transition's number)


def test_partly_filled_buffer_round_trips(tmp_path):
    buffer = make_buffer(100)
    step = fill(buffer, [5, 7, 3])
    save_buffer(buffer, tmp_path / "buffer.pt", step)
    restored = make_buffer(100)
    assert load_buffer(restored, tmp_path / "buffer.pt", step)
    assert len(restored) == 15
    assert (restored.stored() == buffer.stored()).all()  # every stored key, nested ones and pixels too
    assert restored.sample()["obs"].shape == (3, 4, 3, 4, 4)


def test_wrapped_buffer_keeps_its_order_and_overwrites_the_oldest_next(tmp_path):
    buffer = make_buffer(10)
    step = fill(buffer, [6, 9])  # 15 writes into 10 slots: transitions 5..14 remain
    assert stored(buffer) == list(range(5, 15))
    save_buffer(buffer, tmp_path / "buffer.pt", step)
    restored = make_buffer(10)
    assert load_buffer(restored, tmp_path / "buffer.pt", step)
    assert stored(restored) == list(range(5, 15))  # oldest first
    for _ in range(20):  # slices stay inside episode 1 (episode 0 kept 1 transition) and are consecutive
        batch = restored.sample()
        assert (batch["episode"] == 1).all()
        assert (batch["obs"][1:].long() - batch["obs"][:-1].long() == 1).all()
    for b in (buffer, restored):
        b.extend(transitions(15, 3, episode=2))
    assert stored(restored) == stored(buffer) == list(range(8, 18))


def test_a_smaller_buffer_keeps_the_newest_transitions(tmp_path, caplog):
    buffer = make_buffer(100)
    step = fill(buffer, [10, 10])
    save_buffer(buffer, tmp_path / "buffer.pt", step)
    smaller = make_buffer(8)
    with caplog.at_level(logging.WARNING):
        assert load_buffer(smaller, tmp_path / "buffer.pt", step)
    assert stored(smaller) == list(range(12, 20)) and "keeping the newest 8" in caplog.text


def test_a_file_written_by_the_torchrl_buffer_loads(tmp_path):
    """Online runs before this buffer saved torchrl's storage, oldest first, as a dict of tensors."""
    old = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=4)
    old.extend(transitions(0, 5, 0))
    old.extend(transitions(5, 4, 1))
    save_checkpoint(tmp_path / "buffer.pt", {"step": 9, "transitions": 9, "data": old.storage[torch.arange(9)].to_dict()})
    restored = make_buffer(100)
    assert load_buffer(restored, tmp_path / "buffer.pt", 9) and stored(restored) == list(range(9))
    kept = restored.stored()  # the keys batches read: the old file's other keys ("obs") are not stored
    assert (kept == old.storage[torch.arange(9)].select(*kept.keys(True, True))).all()


def test_loading_into_a_filled_buffer_is_refused(tmp_path):
    buffer = make_buffer(10)
    fill(buffer, [3])
    save_buffer(buffer, tmp_path / "buffer.pt", 3)
    with pytest.raises(ValueError, match="empty replay buffer"):
        load_buffer(buffer, tmp_path / "buffer.pt", 3)


def test_saving_again_replaces_the_previous_buffer(tmp_path):
    buffer = make_buffer(100)
    fill(buffer, [4])
    save_buffer(buffer, tmp_path / "buffer.pt", 4)
    buffer.extend(transitions(4, 6, episode=1))
    save_buffer(buffer, tmp_path / "buffer.pt", 10)
    restored = make_buffer(100)
    assert load_buffer(restored, tmp_path / "buffer.pt", 10) and len(restored) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.pt"]  # no temporary file left behind


def test_unusable_buffers_are_refilled_with_a_warning(tmp_path, caplog):
    buffer = make_buffer(100)
    fill(buffer, [5])
    save_buffer(buffer, tmp_path / "buffer.pt", 5)
    restored = make_buffer(100)
    with caplog.at_level(logging.WARNING):
        assert not load_buffer(restored, tmp_path / "missing", 5)
        assert not load_buffer(restored, tmp_path / "buffer.pt", 7)  # a kill between buffer and checkpoint
        path = tmp_path / "buffer.pt"
        path.write_bytes(path.read_bytes()[:-100])  # truncated file
        assert not load_buffer(restored, path, 5)
    assert len(restored) == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "no usable replay buffer (no checkpoint at" in messages
    assert "from step 5, the checkpoint from step 7" in messages and "corrupt, truncated" in messages


def test_empty_buffer_saves_and_loads(tmp_path):
    save_buffer(make_buffer(10), tmp_path / "buffer.pt", 0)
    restored = make_buffer(10)
    assert load_buffer(restored, tmp_path / "buffer.pt", 0) and len(restored) == 0
