"""Exact resume: a run killed with SIGKILL anywhere, then started again, ends where an unbroken run does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent.agents.compiled import compile_problem
from agent.run.checkpoint import load_checkpoint
from tests.conftest import ROOT

# The checkpoint kills both scripts end with: "mid-write-<n>" dies half-way through writing the step-n
# checkpoint, "after-save-<n>" right after it is complete; then the run goes on (or "none": no kill).
CHECKPOINT_KILLS = """
where, _, at = kill.rpartition("-")
if where == "mid-write":
    real_save = ck.torch.save
    def save(obj, f):
        if obj["payload"]["step"] == int(at):
            f.write(b"half a checkpoint"); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, f)
    ck.torch.save = save
if where == "after-save":
    real_ckpt = trainer.checkpointer.save
    def after(step, payload):
        path = real_ckpt(step, payload)
        if step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    trainer.checkpointer.save = after
trainer.run()
"""

# A representation run of 12 updates, checkpoints every 4, in a subprocess; KILL names where it dies.
SCRIPT = """
import os, signal, sys
import agent.run.checkpoint as ck
from agent.run.representation import Trainer
from tests.conftest import compose_cfg

kill, run_dir = sys.argv[1], sys.argv[2]
trainer = Trainer(compose_cfg("steps=12", "checkpoint.every=4", "analysis.every=0", "log.every=2"), run_dir)
if kill == "update-7":  # between checkpoints
    real = trainer.agent.update
    def update(batch, train_probe=True):
        if trainer.step == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(batch, train_probe)
    trainer.agent.update = update
""" + CHECKPOINT_KILLS


def _run(kill: str, run_dir: Path, script: str = SCRIPT, *overrides: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", script, kill, str(run_dir), *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=600).returncode


def _rows(run_dir: Path) -> list[list[str]]:
    header, *rows = (run_dir / "metrics.csv").read_text().splitlines()
    keep = [i for i, k in enumerate(header.split(",")) if not k.startswith("perf/")]
    return [[r.split(",")[i] for i in keep] for r in rows]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("unbroken")
    assert _run("none", run_dir) == 0
    return run_dir


@pytest.mark.parametrize("kill", ["update-7", "mid-write-8", "after-save-4"])
def test_killed_run_ends_where_an_unbroken_one_does(unbroken, tmp_path, kill):
    assert _run(kill, tmp_path) == -9  # SIGKILL
    assert _run("none", tmp_path) == 0  # the same command again
    _assert_same_end(tmp_path, unbroken)


def _assert_same_end(run_dir: Path, unbroken: Path) -> None:
    done, ref = load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(unbroken / "checkpoints" / "last.pt")
    assert done["step"] == ref["step"] == 12 and done["frames"] == ref["frames"]
    for name, value in ref["agent"].items():
        torch.testing.assert_close(done["agent"][name], value, rtol=0, atol=0, msg=name)
    assert _rows(run_dir) == _rows(unbroken)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


# An online TD-MPC2 run of 60 env steps (planning after 20), evaluated and checkpointed every 20.
ONLINE = """
import os, signal, sys
import agent.run.checkpoint as ck
from agent.run.online import OnlineTrainer
from tests.test_online import online_cfg

kill, run_dir, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = online_cfg("task=gym/Pendulum-v1", "aux=random", "task.episode_length=30", "agent.total_steps=60",
                 "agent.seed_steps=20", "agent.eval_every=20", "agent.eval_episodes=1", "log.every=5", *extra)
trainer = OnlineTrainer(cfg, run_dir)
if kill == "step-47":  # mid-episode, between checkpoints, while planning (resumes from 40)
    real = trainer.agent.update
    def update(batch):
        if trainer.step == 47:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(batch)
    trainer.agent.update = update
""" + CHECKPOINT_KILLS


def _run_online(kill: str, run_dir: Path, *overrides: str) -> int:
    return _run(kill, run_dir, ONLINE, *overrides)


@pytest.fixture(scope="module")
def unbroken_online(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("unbroken_online")
    assert _run_online("none", run_dir) == 0
    return run_dir


@pytest.mark.parametrize("kill", ["mid-write-40", "after-save-20"])  # step-47: the compiled test below
def test_killed_online_run_ends_where_an_unbroken_one_does(unbroken_online, tmp_path, kill):
    assert _run_online(kill, tmp_path) == -9
    assert _run_online("none", tmp_path) == 0
    _assert_same_online_end(tmp_path, unbroken_online)


@pytest.mark.slow
def test_killed_compiled_online_run_ends_where_an_unbroken_one_does(tmp_path):
    """``perf.compile`` (the online job's default where inductor builds): the resumed process compiles both losses
    and the planner's graphs again (its kernels from inductor's cache, as a resume on the same machine gets them)
    and ends where the unbroken compiled run does. Killed mid-episode, between checkpoints, while planning: the
    kill of the eager tests above that resumes from furthest back. (~3 min: three processes compile.)"""
    if compile_problem("cpu") is not None:
        pytest.skip("torch.compile cannot build on this CPU (no C++ compiler)")
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert _run_online("none", unbroken, "perf.compile=true") == 0
    assert _run_online("step-47", broken, "perf.compile=true") == -9
    assert _run_online("none", broken, "perf.compile=true") == 0
    _assert_same_online_end(broken, unbroken)
    assert load_checkpoint(broken / "checkpoints" / "last.pt")["compiled"] is load_checkpoint(unbroken / "checkpoints" / "last.pt")["compiled"] is True


def _assert_same_online_end(run_dir: Path, unbroken: Path) -> None:
    done, ref = load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(unbroken / "checkpoints" / "last.pt")
    assert done["step"] == ref["step"] == 60 and done["episode"] == ref["episode"]
    for name, value in ref["agent"].items():
        torch.testing.assert_close(done["agent"][name], value, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(done["actions"], ref["actions"], rtol=0, atol=0)
    assert _rows(run_dir) == _rows(unbroken)
    assert (run_dir / "eval.csv").read_text() == (unbroken / "eval.csv").read_text()
