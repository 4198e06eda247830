"""``perf.compile``: true | false | auto. ``auto`` (the online job's default) compiles on a CPU where inductor
builds, and runs eager, saying why, where it cannot; ``true`` where it cannot is an error before any work.

Most tests set what the probe finds (``_probe``) and stand in for ``torch.compile``, so both branches run
on any machine; the CLI tests make inductor's C++ compiler one that does not exist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import agent.agents.compiled as compiled_mod
from agent.agents.compiled import compile_problem, resolve_compile
from agent.agents.factory import (
    build_agent,
    build_tdmpc_agent,
    load_online_agent,
    tdmpc_signature,
    to_dict,
)
from agent.run.checkpoint import save_checkpoint
from tests.conftest import ROOT, TINY, TINY_PJEPA, compose_cfg

ONLINE = ("agent=tdmpc2", "task=gym/Pendulum-v1", "aux=none")
CANNOT = "InvalidCxxCompiler: none here (a stand-in)"


@pytest.fixture
def probe(monkeypatch):
    """``probe(None)``: inductor builds here; ``probe(CANNOT)``: it cannot. ``torch.compile`` is a stand-in
    that records what it is given."""
    asked: list = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: asked.append(fn) or fn)

    def set_problem(problem: str | None) -> list:
        monkeypatch.setattr(compiled_mod, "_probe", lambda device: problem)
        return asked

    return set_problem


def test_the_online_job_defaults_to_auto_the_representation_job_to_eager():
    """Online: learns as eager on two seeds (docs/results.md section 28). Representation: over three seeds per
    arm the compiled runs' held-out nearest-centroid accuracy trailed eager's by 0.025 (section 31), so it stays off there."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for overrides in (["agent=tdmpc2", "task=dmc/walker-walk"], ["agent=tdmpc2", "task=gym/Pendulum-v1"], ["agent=tdmpc2", "task=counting"]):
            assert compose("config", overrides=overrides).perf.compile == "auto", overrides
        assert compose("config", overrides=["task=counting"]).perf.compile is False


def test_fused_adam_is_the_online_jobs_default_only():
    """Online: learns as the multi-tensor form on two Pendulum seeds (docs/results.md section 32). Representation:
    nothing measurable to gain (docs/benchmarks.md), no learning run, so off."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        assert compose("config", overrides=["agent=tdmpc2", "task=dmc/walker-walk"]).perf.fused_adam is True
        assert compose("config", overrides=["task=counting"]).perf.fused_adam is False


def test_the_probe_on_this_machine():
    """The real probe: a kernel built and run where inductor's C++ compiler is installed (CI's machine has one),
    else the reason it was not."""
    problem = compile_problem("cpu")
    if shutil.which(os.environ.get("CXX", "g++")):
        assert problem is None, problem
    else:
        assert problem and "C++ compiler" in problem
    assert resolve_compile("auto", "cpu") is (problem is None)


@pytest.mark.parametrize("problem", [None, CANNOT])
def test_true_false_and_auto(probe, problem):
    probe(problem)
    assert resolve_compile(False, "cpu") is False
    assert resolve_compile("auto", "cpu") is (problem is None)
    if problem is None:
        assert resolve_compile(True, "cpu") is True
    else:
        with pytest.raises(ValueError, match=r"perf.compile=true, but torch.compile cannot build on cpu \(InvalidCxxCompiler.*auto or false"):
            resolve_compile(True, "cpu")
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="unknown compile setting"):
            resolve_compile(bad, "cpu")


@pytest.mark.parametrize("problem", [None, CANNOT])
def test_a_compile_mode_an_eager_run_would_ignore_is_refused(probe, problem):
    probe(problem)
    with pytest.raises(ValueError, match="perf.compile_mode=reduce-overhead would be ignored: perf.compile=false"):
        resolve_compile(False, "cpu", "reduce-overhead")
    with pytest.raises(ValueError, match="perf.compile_mode=reduce-overhead would be ignored: perf.compile=auto is eager on cuda"):
        resolve_compile("auto", torch.device("cuda"), "reduce-overhead")  # a device object only: no GPU needed
    if problem is None:
        assert resolve_compile("auto", "cpu", "reduce-overhead") is True
    else:
        with pytest.raises(ValueError, match="perf.compile=auto is eager on cpu"):
            resolve_compile("auto", "cpu", "reduce-overhead")


def test_auto_stays_eager_off_the_cpu_without_probing(monkeypatch):
    def probe(device):
        raise AssertionError(f"probed {device}")

    monkeypatch.setattr(compiled_mod, "_probe", probe)
    assert resolve_compile("auto", torch.device("cuda")) is False
    assert resolve_compile("auto", "meta") is False


@pytest.mark.parametrize("problem", [None, CANNOT])
def test_the_agents_compile_as_auto_resolves(probe, problem):
    """Both builders resolve ``auto`` once; what they hand the agents is a bool (a string is refused there)."""
    asked = probe(problem)
    rep = build_agent(compose_cfg("perf.compile=auto"), (3, 64, 64), 1, "cpu")
    online = build_tdmpc_agent(compose_cfg(*ONLINE, "perf.compile=auto"), (3,), 1)
    builds = problem is None
    assert rep.cfg.compile is builds and online.cfg.compile is builds
    assert (rep._compiled_losses is not None) is builds and len(asked) == (2 + 6) * builds  # the loss and the probe's; two losses, 2 x 2 planner graphs
    with pytest.raises(ValueError, match="compile must be True or False here, got 'auto'"):
        type(online.cfg)(compile="auto")


@pytest.mark.parametrize("problem", [None, CANNOT])
def test_a_loaded_agent_compiles_where_this_machine_can(probe, problem, tmp_path):
    """A checkpoint trained with ``perf.compile=true`` loads with ``true`` read as ``auto``; asking for ``true``
    where inductor cannot build is the clear error (a clean exit from the evaluation CLI)."""
    from agent.evaluate import main as evaluate_main

    cfg = to_dict(compose_cfg(*ONLINE, "perf.compile=true"))
    agent = build_tdmpc_agent(compose_cfg(*ONLINE), (3,), 1)
    save_checkpoint(tmp_path / "ckpt.pt", {"step": 0, "config": cfg, "signature": tdmpc_signature(cfg, (3,), 1), "agent": agent.state_dict()})
    probe(problem)
    loaded, _ = load_online_agent(tmp_path / "ckpt.pt")
    assert loaded.cfg.compile is (problem is None)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), agent.state_dict().values()))
    assert load_online_agent(tmp_path / "ckpt.pt", perf_compile=False)[0].cfg.compile is False
    with pytest.raises(SystemExit, match="compile must be one of true, false, auto, got 'maybe'"):
        evaluate_main([f"checkpoint={tmp_path / 'ckpt.pt'}", "compile=maybe"])
    if problem is not None:
        with pytest.raises(SystemExit, match="perf.compile=true, but torch.compile cannot build on cpu"):
            evaluate_main([f"checkpoint={tmp_path / 'ckpt.pt'}", "compile=True", "episodes=1"])


def test_a_resume_that_compiles_otherwise_says_so(probe, caplog, monkeypatch, tmp_path):
    """A checkpoint records whether its run compiled; ``auto`` resumed where it resolves otherwise warns. A
    compiling run starts from empty dynamo caches (a sweep's jobs may share a process)."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    cfg = online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", "perf.compile=auto")
    probe(None)
    first = OnlineTrainer(cfg, tmp_path)
    assert first.compiles is True and resets == [1]
    first.save()
    for problem, warned in ((None, False), (CANNOT, True)):
        probe(problem)
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent.run.skeleton"):
            OnlineTrainer(cfg, tmp_path)
        assert ("the checkpoint trained compiled; this run goes on eager (perf.compile=auto on cpu)" in caplog.text) == warned


# The CLI where inductor cannot build: a C++ compiler that does not exist (the probe's kernel is new to every
# process, so no cached kernel stands in for the compiler).
def _train(tmp_path: Path, *args: str) -> tuple[int, str]:
    tiny = [o for o in TINY if not o.startswith("perf.compile")]
    cmd = [sys.executable, str(ROOT / "train.py"), *tiny, *TINY_PJEPA, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr  # Hydra's log lines go to stdout


@pytest.mark.slow
def test_auto_runs_eager_where_torch_compile_cannot_build(tmp_path):
    code, log = _train(tmp_path, "steps=4", "analysis.every=0", "perf.compile=auto")
    assert code == 0, log[-3000:]
    assert "perf.compile=auto: eager on cpu, torch.compile cannot build here (InvalidCxxCompiler" in log
    assert "no-such-g++" in log  # inductor's own words, naming the compiler it tried
    assert json.loads((tmp_path / "run" / "status.json").read_text())["compiled"] is False


@pytest.mark.slow
def test_true_where_torch_compile_cannot_build_stops_before_any_work(tmp_path):
    code, log = _train(tmp_path, "perf.compile=true")
    assert code == 2 and "perf.compile=true, but torch.compile cannot build on cpu" in log and "perf.compile=auto or false" in log
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_stops_before_any_work(tmp_path):
    code, log = _train(tmp_path, "device=cuda")
    assert code == 2 and "device=cuda was asked for but torch.cuda.is_available() is False" in log
    assert "Traceback" not in log
