"""Sweeps through the launchers (basic, submitit_local, Ray on loopback) and the report over them."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys

import pytest

from agent import report
from agent.run.status import read_status
from tests.conftest import ROOT, TINY, TINY_PJEPA
from tests.test_train import run_cli

SHORT = [*TINY, *TINY_PJEPA, "steps=6", "analysis.every=0"]


def jobs(sweep_dir):
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_report_names_it(tmp_path):
    proc = run_cli("-m", *SHORT, "probe.lr=1e30,3e-4", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0  # the sweep says one job failed ...
    failed, done = jobs(tmp_path)
    assert read_status(failed)["status"] == "failed" and "non-finite" in read_status(failed)["reason"]
    assert read_status(done) == {**read_status(done), "status": "complete", "step": 6}  # ... after running the other
    assert read_status(done)["precision"] in ("fp32", "bf16")  # what the run computed in (auto resolved)
    out = report.main([str(tmp_path), "reps=200"])
    rows = {r["path"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert rows[str(failed)]["status"] == "failed" and "training stopped at step" in rows[str(failed)]["reason"]
    assert rows[str(done)]["status"] == "complete" and rows[str(done)]["variant"] == "probe.lr=0.0003"


@pytest.mark.slow
def test_submitit_local_sweep_over_seeds(tmp_path):
    proc = run_cli("-m", "hydra/launcher=submitit_local", *SHORT, "seed=1,2", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in jobs(tmp_path)] == ["0_counting4_reward-joint_s1", "1_counting4_reward-joint_s2"]
    for job in jobs(tmp_path):
        assert read_status(job)["status"] == "complete" and (job / "analysis" / "metrics.json").is_file()
    out = report.main([str(tmp_path), "reps=200"])
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert {r["n"] for r in rows if r["metric"] == "heldout_centroid_acc"} == {"2"}  # one variant, two seeds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_launcher_on_a_loopback_cluster(tmp_path):
    ray = shutil.which("ray", path=str(ROOT / ".venv" / "bin")) or shutil.which("ray") or f"{sys.executable} -m ray"
    port = free_port()
    start = [*ray.split(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=100000000"]  # fmt: skip
    up = subprocess.run(start, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        proc = run_cli(
            "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address=127.0.0.1:{port}", *SHORT,
            "aux=reward,none", f"hydra.sweep.dir={tmp_path}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        subprocess.run([*ray.split(), "stop", "--force"], capture_output=True, timeout=120)
    assert [p.name for p in jobs(tmp_path)] == ["0_counting4_reward-joint_s1", "1_counting4_none-joint_s1"]
    for job in jobs(tmp_path):
        assert read_status(job)["status"] == "complete" and (job / "analysis" / "metrics.json").is_file()


@pytest.mark.slow
def test_unknown_launcher_lists_the_available_ones(tmp_path):
    proc = run_cli("-m", "hydra/launcher=slurm", *SHORT, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    for name in ("submitit_slurm", "submitit_local", "ray", "ray_cluster", "basic"):
        assert name in proc.stderr
