"""Training end to end: the real CLI, determinism, resume, NaN stop, corrupt and mismatched checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from agent.agents.update import NonFiniteLossError
from agent.analysis import METRIC_KEYS
from agent.analysis.monitor import FIGURES, monitoring_set, read_curve
from agent.api import load
from agent.run.checkpoint import CheckpointError, load_checkpoint
from agent.run.representation import Trainer
from tests.conftest import ROOT, TINY, TINY_PJEPA, metrics_rows


def run_cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_smoke_run_writes_everything(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("task=counting", *TINY, *TINY_PJEPA, "log.tensorboard=true", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "metrics.csv").read_text().count("\n") == 1 + 12 // 3
    assert list((run_dir / "tb").glob("events.*"))
    metrics = json.loads((run_dir / "analysis" / "metrics.json").read_text())
    for key in (*METRIC_KEYS, "decoder_mse"):
        assert key in metrics and key in metrics["final"] and key in metrics["best"]
    for fig in (*FIGURES, "curves.png"):
        assert (run_dir / "analysis" / fig).stat().st_size > 1000
    # the curve: initial encoder, periodic analysis, final; best kept apart from final
    assert (run_dir / "analysis" / "step_0000000" / "metrics.json").is_file()
    assert (run_dir / "analysis" / "step_0000006" / "metrics.json").is_file()
    curve = read_curve(run_dir / "repr.csv")
    assert curve["step"] == [0, 6, 12]
    assert metrics["final"]["step"] == 12 and metrics["best"]["by"] == "heldout_centroid_acc"
    assert metrics["best"]["heldout_centroid_acc"] == max(curve["heldout_centroid_acc"])
    # the analysis CLI reproduces the final metrics from the checkpoint
    out = subprocess.run(
        [sys.executable, "-m", "agent.analyze", f"run_dir={run_dir}", f"out={tmp_path / 'again'}", "num_obs=64", "heldout_num_obs=64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    premises = ("consistency_residual", "aux_residual")  # measured on the run's replay buffer only
    assert metrics["consistency_residual"] > 0 and metrics["aux_residual"] > 0 and 0 <= metrics["unhealthy_collapse"] <= 1
    assert again == pytest.approx({k: v for k, v in metrics.items() if k not in ("final", "best", *premises)})
    # into the run's own analysis dir: what only the training measured (premises, the curve) is kept
    out = subprocess.run(
        [sys.executable, "-m", "agent.analyze", f"run_dir={run_dir}", "num_obs=64", "heldout_num_obs=64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    own = json.loads((run_dir / "analysis" / "metrics.json").read_text())
    assert {k: own[k] for k in (*premises, "final", "best")} == {k: metrics[k] for k in (*premises, "final", "best")}
    # ... and the curve from the kept checkpoints
    out = subprocess.run(
        [sys.executable, "-m", "agent.analyze", f"run_dir={run_dir}", f"out={tmp_path / 'all'}", "num_obs=64", "heldout_num_obs=64", "checkpoints=all"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_curve(tmp_path / "all" / "repr.csv")["step"] == [6, 12]
    assert (tmp_path / "all" / "curves.png").is_file()


def test_reanalysis_keeps_only_what_the_training_measured_at_the_same_step():
    from agent.analyze import _kept_from_training

    training = {"heldout_knn_acc": 0.5, "aux_residual": 0.2, "final": {"step": 12}}
    assert _kept_from_training(training, 12, {"heldout_knn_acc": 0.6}) == {"aux_residual": 0.2, "final": {"step": 12}}
    assert _kept_from_training(training, 6, {"heldout_knn_acc": 0.6}) == {}  # another checkpoint: nothing stale
    assert _kept_from_training({"aux_residual": 0.2}, 12, {}) == {}  # no step named: nothing


@pytest.mark.slow
def test_hydra_multirun_sweeps_aux_targets(tmp_path):
    proc = run_cli("-m", *TINY, *TINY_PJEPA, "steps=3", "analysis.every=0", "aux=reward,none", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs == ["0_counting4_reward-joint_s1", "1_counting4_none-joint_s1"]
    for job in jobs:
        assert (tmp_path / job / "analysis" / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [("aux=contrastive", "aux"), ("task=atari", "task"), ("routing=both", "unknown gradient routing 'both'")],
)
def test_cli_bad_names_fail_clearly(tmp_path, override, message):
    proc = run_cli(*TINY, *TINY_PJEPA, override, f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize("perf", [[], ["perf.precision=fp32", "perf.channels_last=false", "probe.every=1"]], ids=["recipe", "fp32"])
def test_same_seed_same_numbers(tiny_cfg, tmp_path, perf):
    a = Trainer(tiny_cfg("analysis.every=0", *perf), tmp_path / "a").run()
    b = Trainer(tiny_cfg("analysis.every=0", *perf), tmp_path / "b").run()
    assert (tmp_path / "a" / "metrics.csv").read_text().split("\n")[0] == (tmp_path / "b" / "metrics.csv").read_text().split("\n")[0]
    np.testing.assert_array_equal(metrics_rows(tmp_path / "a"), metrics_rows(tmp_path / "b"))
    assert a == b
    c = Trainer(tiny_cfg("analysis.every=0", "seed=2", *perf), tmp_path / "c").run()
    assert c != a


def test_killed_run_resumes_from_last_checkpoint(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    assert trainer.step == 6
    trainer.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 12
    steps = [int(line.split(",")[0]) for line in (tmp_path / "metrics.csv").read_text().split("\n")[1:] if line]
    assert steps == [3, 6, 9, 12]


def test_resumed_run_drops_rows_logged_after_its_checkpoint(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    csv_path = tmp_path / "metrics.csv"
    header, *rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([header, *rows, "9" + rows[-1][1:], "10,0.5"]))  # killed after step 9, mid-row
    (tmp_path / "stale.csv").write_text("")  # killed before writing a header
    Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path).run()
    steps = [int(line.split(",")[0]) for line in csv_path.read_text().splitlines()[1:]]
    assert steps == [3, 6, 9, 12]
    assert not (tmp_path / "stale.csv").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)
    real = trainer.agent.losses

    def poisoned(batch):
        terms, z = real(batch)
        if trainer.step >= 8:
            terms["dyn"] = terms["dyn"] * float("nan")
        return terms, z

    monkeypatch.setattr(trainer.agent, "losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="training stopped at step 8.*last good checkpoint"):
        trainer.run()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values() if v.is_floating_point())


def test_corrupt_checkpoint_raises_clearly(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="none of them loads"):  # last.pt is step_0000006.pt (a hard link)
        Trainer(tiny_cfg("steps=12"), tmp_path)


def test_checkpoint_from_other_config_names_the_difference(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    with pytest.raises(CheckpointError, match="model.latent_dim: checkpoint has 16, config has 32"):
        Trainer(tiny_cfg("steps=12", "model.latent_dim=32"), tmp_path)
    with pytest.raises(CheckpointError, match="aux._target_"):
        Trainer(tiny_cfg("steps=12", "aux=random"), tmp_path)


def test_public_api_encodes_uint8_batches(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    model = load(tmp_path)
    pixels, counts = monitoring_set(n=10)
    z = model.encode(pixels)
    assert z.shape == (10, 16) and z.dtype == torch.float32
    torch.testing.assert_close(model.encode(pixels), z)  # eval mode: no augmentation
    assert model.decode(z).shape == (10, 3, 64, 64)
    with pytest.raises(ValueError, match="uint8"):
        model.encode(pixels.float())
    with pytest.raises(ValueError, match=r"expected observations \[B, 3, 64, 64\]"):
        model.encode(pixels[:, :, :32])


def test_monitoring_set_is_fixed_and_labelled():
    a, ca = monitoring_set(n=256)
    b, cb = monitoring_set(n=256)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert a.shape == (256, 3, 64, 64) and set(ca.tolist()) == set(range(9))


def test_bad_analysis_and_probe_settings_fail_before_work(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="probe.every=0: must be an integer >= 1"):
        Trainer(tiny_cfg("probe.every=0"), tmp_path / "a")
    with pytest.raises(ValueError, match="held-out seeds 50..113 overlap the monitoring seeds 42..105"):
        Trainer(tiny_cfg("analysis.heldout_seed=50"), tmp_path / "b")  # seeds 50..113 overlap 42..105
    with pytest.raises(ValueError, match="must be >= 2"):
        Trainer(tiny_cfg("analysis.heldout_num_obs=1"), tmp_path / "c")


def test_time_limit_ends_the_run_early_saved_and_analysed(tiny_cfg, tmp_path):
    final = Trainer(tiny_cfg("steps=12", "time_limit=1e-9"), tmp_path).run()  # spent after the first update
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert final["heldout_centroid_acc"] is not None
    assert (tmp_path / "analysis" / "metrics.json").exists()
    steps = [int(line.split(",")[0]) for line in (tmp_path / "repr.csv").read_text().splitlines()[1:]]
    assert steps == [0, 1]
    assert [int(line.split(",")[0]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]] == [1]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true"])
def test_bad_time_limit_fails_before_work(tiny_cfg, tmp_path, value):
    with pytest.raises(ValueError, match="time_limit=.*: must be a number > 0 or null"):
        Trainer(tiny_cfg(f"time_limit={value}"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("override", ["probe.lr=1e30", "optim.lr=1e30"])
def test_exploding_learning_rates_stop_without_saving_non_finite_weights(tiny_cfg, tmp_path, override):
    with pytest.raises(NonFiniteLossError, match="training stopped at step"):
        Trainer(tiny_cfg("steps=60", "analysis.every=0", "checkpoint.every=1", override), tmp_path).run()
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        weights = load_checkpoint(path)["agent"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), path


def test_resumed_table_gains_the_columns_a_newer_version_logs(tmp_path):
    from agent.run.logger import Logger

    first = Logger(tmp_path, tensorboard=False)
    first.log(1, {"a": 1.0}, table="repr")
    first.close()
    again = Logger(tmp_path, tensorboard=False, resume_step=1)
    again.log(2, {"a": 2.0, "b": 3.0}, table="repr")
    again.close()
    assert (tmp_path / "repr.csv").read_text().splitlines() == ["step,a,b", "1,1.0,", "2,2.0,3.0"]
    with pytest.raises(KeyError, match="were not in the first logged row"):
        again.log(3, {"a": 1.0, "c": 1.0}, table="repr")


def test_lr_schedule_values():
    from agent.agents.update import lr_scale

    assert lr_scale("constant", 7, 10, 0.1) == 1.0
    assert [round(lr_scale("cosine", k, 5, 0.1), 6) for k in range(6)] == [1.0, 0.868198, 0.55, 0.231802, 0.1, 0.1]
    assert [lr_scale("step", k, 5, 0.3, drop_at=3) for k in range(6)] == [1.0, 1.0, 1.0, 0.3, 0.3, 0.3]
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_scale("linear", 0, 5, 0.1)
    with pytest.raises(ValueError, match="needs drop_at"):
        lr_scale("step", 0, 5, 0.1)


@pytest.mark.parametrize("schedule", [("optim.schedule=cosine", "optim.drop_at=null"), ("optim.schedule=step", "optim.drop_at=4")])
def test_lr_schedules_set_each_update_and_survive_a_kill(tiny_cfg, tmp_path, schedule):
    """Every update runs at base x lr_scale(step); a run killed after its checkpoint (past the step
    schedule's drop) goes on where it was."""
    from agent.agents.update import lr_scale

    cfg = ("steps=12", "analysis.every=0", *schedule, "optim.min_lr_scale=0.2", "optim.enc_lr_scale=0.5")
    name, drop = schedule[0].split("=")[1], (4 if "step" in schedule[0] else None)
    seen: list[tuple[float, float]] = []

    def recording(trainer, kill_after=None):
        real = trainer.agent.update

        def update(batch, train_probe=True):
            if kill_after is not None and len(seen) == kill_after:
                raise KeyboardInterrupt  # killed after the step-6 checkpoint
            seen.append(tuple(g["lr"] for g in trainer.agent.optim.param_groups[:2]))
            return real(batch, train_probe)

        trainer.agent.update = update
        return trainer

    with pytest.raises(KeyboardInterrupt):
        recording(Trainer(tiny_cfg(*cfg), tmp_path), kill_after=6).run()
    resumed = recording(Trainer(tiny_cfg(*cfg), tmp_path))
    assert resumed.step == 6
    resumed.run()
    expected = [lr * lr_scale(name, k, 12, 0.2, drop) for k in range(12) for lr in (1.5e-4, 3e-4)]
    assert [lr for pair in seen for lr in pair] == pytest.approx(expected)
    assert seen[-1] == pytest.approx((1.5e-4 * 0.2, 3e-4 * 0.2))


def test_a_resume_names_the_settings_its_command_changed(tiny_cfg, tmp_path, caplog):
    Trainer(tiny_cfg("steps=6", "analysis.every=0"), tmp_path).run()
    with caplog.at_level("WARNING"):
        resumed = Trainer(tiny_cfg("steps=8", "analysis.every=0", "optim.lr=1e-4", "log.every=5"), tmp_path)
    assert resumed.step == 6
    text = caplog.text
    assert "resuming with settings other than the checkpoint's" in text
    assert "steps: 6 -> 8" in text and "optim.lr: 0.0003 -> 0.0001" in text
    assert "log.every" not in text  # how a run logs is not its plan
