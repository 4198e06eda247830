"""Checkpoints: no code runs on load, altered files and missing keys are errors, failed writes lose nothing."""

from __future__ import annotations

import copy
import errno
import pathlib

import pytest
import torch

import agent.run.checkpoint as ckpt_mod
from agent.api import load
from agent.run.checkpoint import (
    Checkpointer,
    CheckpointError,
    digest,
    load_checkpoint,
    save_checkpoint,
)
from agent.run.representation import Trainer
from tests.conftest import plain_dicts


class _Exploit:
    """Unpickling this object would create ``marker``: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _payload() -> dict:
    return {"step": 3, "w": torch.full((1000,), 1.2345), "half": torch.ones(4, dtype=torch.bfloat16), "s": torch.tensor(2.0), "cfg": {"a": [1, 2.5, None, "x"]}}


def test_round_trip_and_digest_covers_every_value(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _payload())
    data = load_checkpoint(tmp_path / "c.pt")
    assert data["step"] == 3 and data["cfg"]["a"] == [1, 2.5, None, "x"]
    torch.testing.assert_close(data["half"], torch.ones(4, dtype=torch.bfloat16))
    base = digest(_payload())
    changed = _payload()
    changed["w"][500] = 1.2346
    assert digest(changed) != base
    changed = _payload()
    changed["cfg"]["a"][1] = 2.0
    assert digest(changed) != base
    with pytest.raises(TypeError, match="tensors and plain types only"):
        digest({"obj": object()})


def test_crafted_checkpoint_runs_no_code(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_cfg("steps=3", "analysis.every=0"), run).run()
    marker = tmp_path / "pwned"
    last = run / "checkpoints" / "last.pt"
    last.unlink()
    torch.save({"format": "jepa-mpc/2", "sha256": "", "payload": {"x": _Exploit(marker)}}, last)
    with pytest.raises(CheckpointError, match="unsafe to load"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError, match="unsafe to load"):
        load(run)
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), run)  # resume skips it for the intact step file
    assert not marker.exists()


def test_flipped_bit_is_caught(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _payload())
    raw = bytearray(path.read_bytes())
    at = raw.find(torch.full((4,), 1.2345).numpy().tobytes()) + 1000  # inside the tensor's bytes
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        load_checkpoint(path)


def test_missing_key_is_a_checkpoint_error(tiny_cfg, tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1, "agent": {}})
    with pytest.raises(CheckpointError, match="has no config"):
        load(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="has no agent.weights"):
        load_checkpoint(tmp_path / "c.pt")["agent"]["weights"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1})
    real = torch.save

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*c\.pt \(the disk is full\); the previous"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(ckpt_mod.torch, "save", real)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_disk_full_mid_run_then_rerun_resumes(tiny_cfg, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    real, calls = torch.save, []

    def fills_up(obj, f):
        calls.append(1)
        if len(calls) > 1:  # the first save (step 6) fits, the second (step 12) does not
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/3")
        real(obj, f)

    monkeypatch.setattr(ckpt_mod.torch, "save", fills_up)
    with pytest.raises(CheckpointError, match="the disk is full"):
        trainer.run()
    monkeypatch.setattr(ckpt_mod.torch, "save", real)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    resumed = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    assert resumed.step == 6


def test_resume_falls_back_to_the_newest_complete_checkpoint(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=12", "analysis.every=0", "checkpoint.keep=3"), tmp_path).run()
    d = tmp_path / "checkpoints"
    assert sorted(p.name for p in d.iterdir()) == ["last.pt", "step_0000006.pt", "step_0000012.pt"]
    for name in ("last.pt", "step_0000012.pt"):  # both damaged (last.pt unlinked first: it shares step 12's data)
        (d / name).unlink()
        (d / name).write_bytes(b"garbage")
    (d / "last.pt.tmp").write_bytes(b"half a file")
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    assert trainer.step == 6
    assert not (d / "last.pt.tmp").exists()


def test_unresumable_run_is_never_overwritten(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    d = tmp_path / "checkpoints"
    (d / "last.pt").unlink()
    (d / "step_0000006.pt").write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"none of them loads.*nothing was overwritten"):
        Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    with pytest.raises(CheckpointError, match="resume=false, but .* already holds checkpoints"):
        Trainer(tiny_cfg("steps=12", "analysis.every=0", "resume=false"), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_checkpointer_rotates_and_links(tmp_path):
    c = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        c.save(step, {"step": step})
    assert [p.name for p in c.step_files()] == ["step_0000002.pt", "step_0000003.pt"]
    assert c.latest()["step"] == 3
    with pytest.raises(ValueError, match="checkpoint.keep must be >= 1"):
        Checkpointer(tmp_path, keep=0)


def test_a_kill_before_last_pt_is_relinked_resumes_from_the_newer_step(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=12", "analysis.every=0", "checkpoint.keep=3"), tmp_path).run()
    d = tmp_path / "checkpoints"
    (d / "last.pt").unlink()
    (d / "last.pt").write_bytes((d / "step_0000006.pt").read_bytes())  # last.pt still at step 6
    assert Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path).step == 12


def test_resume_trains_with_the_configs_optimiser_settings(tiny_cfg, tmp_path):
    """A resumed run keeps the checkpoint's Adam moments but the lr / eps its own config asks for."""
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0", "optim.lr=1e-4", "optim.eps=1e-6", "optim.enc_lr_scale=0.3"), tmp_path)
    assert trainer.step == 6
    groups = trainer.agent.optim.param_groups
    assert [g["lr"] for g in groups[:2]] == pytest.approx([3e-5, 1e-4])
    assert {g["eps"] for g in groups} == {1e-6}
    steps = {float(s["step"]) for s in trainer.agent.optim.state.values()}
    assert steps == {6.0}  # the moments came back with the checkpoint


def test_a_saved_config_is_converted_like_a_new_one(tiny_cfg, tmp_path):
    """The loaders build from the saved config's typed settings: an older config (settings added since,
    a renamed key; a TD-MPC2 config with its bins under ``agent``) loads the same weights; a value out
    of range is a CheckpointError naming it."""
    from agent.agents.factory import (
        build_tdmpc_agent,
        load_online_agent,
        saved_settings,
        tdmpc_signature,
        to_dict,
    )
    from agent.run.settings import RepresentationSettings

    Trainer(tiny_cfg("steps=2", "analysis.every=0"), tmp_path).run()
    data = plain_dicts(load_checkpoint(tmp_path / "checkpoints" / "last.pt"))
    old = copy.deepcopy(data)  # as configs saved by older versions: settings added since are missing
    for group, key in [(None, "threads"), (None, "malloc_reuse"), (None, "time_limit"), (None, "two_hot"), ("log", "wandb"), ("data", "device"), ("optim", "eps"), ("optim", "schedule"), ("optim", "drop_at"), (None, "perf")]:
        del (old["config"][group] if group else old["config"])[key]
    old["config"]["data"]["action_repeat"] = old["config"]["data"].pop("action_hold")  # its old name
    save_checkpoint(tmp_path / "old.pt", old)
    loaded, want = load(tmp_path / "old.pt"), load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.agent.state_dict().values(), want.agent.state_dict().values()))
    filled = saved_settings(old["config"], tmp_path / "old.pt", RepresentationSettings)
    # what the code did before those settings existed, not the counting recipe's tuned values (step, bf16)
    assert (filled.optim.schedule, filled.optim.drop_at, filled.perf.precision) == ("constant", None, "fp32")
    assert filled.perf.compile is False  # the job's default (load_pjepa_agent loads eager anyway)
    assert filled.malloc_reuse is True  # plumbing: today's default
    data["config"]["optim"]["lr"] = -1.0  # a value out of range is never replaced
    save_checkpoint(tmp_path / "bad.pt", data)
    with pytest.raises(CheckpointError, match=r"(?s)does not convert.*optim.lr=-1.0: must be"):
        load(tmp_path / "bad.pt")

    cfg = to_dict(tiny_cfg("agent=tdmpc2", "task=gym/Pendulum-v1", "two_hot.num_bins=51"))
    agent = build_tdmpc_agent(cfg, (3,), 1)
    legacy = {**cfg, "agent": {**cfg["agent"], **cfg["two_hot"]}}
    del legacy["two_hot"]
    save_checkpoint(tmp_path / "old.pt", {"step": 0, "config": legacy, "signature": tdmpc_signature(cfg, (3,), 1), "agent": agent.state_dict()})
    loaded, _ = load_online_agent(tmp_path / "old.pt")
    assert loaded.model.num_bins == 51
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), agent.state_dict().values()))
