"""``perf.compile``: true | false | auto. ``auto`` (both jobs' default) compiles on a CPU where inductor
builds, and runs eager, saying why, where it cannot; ``true`` where it cannot is an error before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import agent.agents.compiled as compiled_mod
from agent.agents.compiled import compile_problem, resolve_compile
from agent.agents.factory import build_agent, build_tdmpc_agent
from tests.conftest import ROOT, TINY, TINY_PJEPA, compose_cfg

ONLINE = ("agent=tdmpc2", "task=gym/Pendulum-v1", "aux=none")


def test_both_jobs_default_to_auto():
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for overrides in (["task=counting"], ["agent=tdmpc2", "task=dmc/walker-walk"], ["agent=tdmpc2", "task=gym/Pendulum-v1"]):
            assert compose("config", overrides=overrides).perf.compile == "auto", overrides


def test_true_and_false_as_asked_auto_by_the_probe():
    builds = compile_problem("cpu") is None  # this machine: a C++ compiler inductor can use (CI's has one)
    assert resolve_compile(False, "cpu") is False
    assert resolve_compile("auto", "cpu") is builds
    if builds:
        assert resolve_compile(True, "cpu") is True
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="unknown compile setting"):
            resolve_compile(bad, "cpu")


def test_auto_stays_eager_off_the_cpu_without_probing(monkeypatch):
    def probe(device):
        raise AssertionError(f"probed {device}")

    monkeypatch.setattr(compiled_mod, "_probe", probe)
    assert resolve_compile("auto", torch.device("cuda")) is False  # a device object only: no GPU needed
    assert resolve_compile("auto", "meta") is False


def test_the_agents_compile_as_auto_resolves(monkeypatch):
    """Both builders resolve ``auto`` once; what they hand the agents is a bool. ``torch.compile`` is a
    stand-in here (the probe still tries the real one), so nothing big is compiled."""
    asked = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: asked.append(fn) or fn)
    builds = compile_problem("cpu") is None
    rep = build_agent(compose_cfg("perf.compile=auto"), (3, 64, 64), 1)
    online = build_tdmpc_agent(compose_cfg(*ONLINE, "perf.compile=auto"), (3,), 1)
    assert rep.cfg.compile is builds and online.cfg.compile is builds
    assert (rep._compiled_losses is not None) is builds and len(asked) == (1 + 6) * builds


# Where inductor cannot build: a C++ compiler that does not exist, and an empty inductor cache (a cached
# kernel would need no compiler).
def _no_compiler(tmp_path: Path) -> dict[str, str]:
    return {"CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}


def _train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    tiny = [o for o in TINY if not o.startswith("perf.compile")]
    cmd = [sys.executable, str(ROOT / "train.py"), *tiny, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    proc.log = proc.stdout + proc.stderr  # Hydra's log lines go to stdout
    return proc


@pytest.mark.slow
def test_auto_runs_eager_where_torch_compile_cannot_build(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train(*TINY_PJEPA, "steps=4", "analysis.every=0", "perf.compile=auto", f"hydra.run.dir={run_dir}", env=_no_compiler(tmp_path))
    assert proc.returncode == 0, proc.log[-3000:]
    assert "perf.compile=auto: eager on cpu, torch.compile cannot build here" in proc.log
    assert "no-such-g++" in proc.log  # the reason: inductor's own words, naming the compiler it tried
    assert json.loads((run_dir / "status.json").read_text())["compiled"] is False


@pytest.mark.slow
def test_true_where_torch_compile_cannot_build_stops_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train(*TINY_PJEPA, "perf.compile=true", f"hydra.run.dir={run_dir}", env=_no_compiler(tmp_path))
    assert proc.returncode == 2
    assert "perf.compile=true, but torch.compile cannot build on cpu" in proc.log and "perf.compile=auto or false" in proc.log
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_stops_before_any_work(tmp_path):
    proc = _train(*TINY_PJEPA, "device=cuda", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "device=cuda was asked for but torch.cuda.is_available() is False" in proc.log
    assert "Traceback" not in proc.log


def test_a_loaded_agent_compiles_where_this_machine_can(monkeypatch, tmp_path):
    """A checkpoint trained with ``perf.compile=true`` loads where torch.compile cannot build: ``true`` is
    read as ``auto`` (eager there); asking for ``true`` there is the clear error. P-JEPA agents load uncompiled."""
    from agent.agents.factory import load_online_agent, tdmpc_signature, to_dict
    from agent.evaluate import main as evaluate_main
    from agent.run.checkpoint import save_checkpoint

    cfg = to_dict(compose_cfg(*ONLINE, "perf.compile=true"))
    agent = build_tdmpc_agent(compose_cfg(*ONLINE), (3,), 1)  # eager: the weights are what matters here
    save_checkpoint(tmp_path / "ckpt.pt", {"step": 0, "config": cfg, "signature": tdmpc_signature(cfg, (3,), 1), "agent": agent.state_dict()})
    monkeypatch.setattr(compiled_mod, "_probe", lambda device: "InvalidCxxCompiler: none here (a stand-in)")
    loaded, _ = load_online_agent(tmp_path / "ckpt.pt")
    assert loaded.cfg.compile is False and all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), agent.state_dict().values()))
    assert load_online_agent(tmp_path / "ckpt.pt", compile=False)[0].cfg.compile is False
    with pytest.raises(ValueError, match="perf.compile=true, but torch.compile cannot build on cpu"):
        load_online_agent(tmp_path / "ckpt.pt", compile=True)
    with pytest.raises(SystemExit, match="compile must be one of true, false, auto, got 'maybe'"):
        evaluate_main([f"checkpoint={tmp_path / 'ckpt.pt'}", "compile=maybe"])
