"""The sweep report on hand-made run directories: grouping, seeds, CIs, and every broken run listed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent import report
from agent.analysis.aggregate import interval
from agent.analysis.sweep import REPR_METRICS, find_runs, read_run, variant_labels
from agent.run.status import read_status, write_status


def make_run(path: Path, overrides: list[str], seed: int, *, acc: float | None = None, returns: list[float] | None = None,
             status: str | None = "complete", steps: int = 100, task: dict | None = None) -> Path:  # fmt: skip
    """A run directory as train.py leaves it: .hydra config and overrides, outputs, status.json."""
    (path / ".hydra").mkdir(parents=True)
    online = returns is not None
    cfg = {"seed": seed, "steps": steps, "agent": {"name": "tdmpc2" if online else "pjepa", "total_steps": steps}}
    if task is not None:
        cfg["task"] = task
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}", "log.progress=false"]))
    if online:
        rows = [[(i + 1) * steps // len(returns), r, float(r > 500)] for i, r in enumerate(returns)]
        with (path / "eval.csv").open("w", newline="") as f:
            csv.writer(f).writerows([["step", "eval/return", "eval/success"], *rows])
    elif acc is not None:
        (path / "repr.csv").write_text(f"step,repr/heldout_centroid_acc\n0,0.1\n{steps // 2},{acc / 2}\n{steps},{acc}\n")
        (path / "analysis").mkdir()
        metrics = {k: acc for k in REPR_METRICS} | {"aux_residual": None, "final": {"step": steps}}
        (path / "analysis" / "metrics.json").write_text(json.dumps(metrics))
    if status:
        write_status(path, status, step=steps, **({"reason": "ValueError: boom"} if status == "failed" else {}))
    return path


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    make_run(root / "0_reward_s1", ["task=counting", "aux=reward"], 1, acc=0.8)
    make_run(root / "1_reward_s2", ["task=counting", "aux=reward"], 2, acc=0.9)
    make_run(root / "2_none_s1", ["task=counting", "aux=none"], 1, acc=0.2)
    make_run(root / "3_none_s2", ["task=counting", "aux=none"], 2, acc=0.3, status="failed")
    make_run(root / "4_random_s1", ["task=counting", "aux=random"], 1, acc=0.5, status="running")
    make_run(root / "5_random_s2", ["task=counting", "aux=random"], 2, acc=None, status="running")
    bad = make_run(root / "6_random_s3", ["task=counting", "aux=random"], 3, acc=0.4)
    (bad / "analysis" / "metrics.json").write_text('{"heldout_centroid_acc": 0.4, ')  # cut off mid-write
    (root / "7_died").mkdir()  # a job that died before Hydra wrote its config; job 8 never started
    (root / "9_reward_s3").mkdir()
    make_run(root / "9_reward_s3" / "x", [], 0)  # nested run dirs are found too (status only: incomplete)
    return root


def test_runs_are_found_and_every_broken_one_has_a_reason(sweep):
    runs, broken = find_runs([sweep])
    assert [p.name for p in runs] == ["0_reward_s1", "1_reward_s2", "2_none_s1", "3_none_s2", "4_random_s1", "5_random_s2", "6_random_s3", "x"]
    reasons = {p.name: r.reason for r in broken for p in [r.path]}
    assert "died before Hydra" in reasons["7_died"] and "missing" in reasons["job 8"]
    assert "9_reward_s3" not in reasons  # it holds a run
    recs = {r.path.name: r for r in map(read_run, runs)}
    assert recs["0_reward_s1"].status == "complete" and recs["0_reward_s1"].final["heldout_centroid_acc"] == 0.8
    assert np.isnan(recs["0_reward_s1"].final["aux_residual"])  # null in metrics.json: not a number
    assert (recs["3_none_s2"].status, recs["3_none_s2"].reason) == ("failed", "ValueError: boom")
    assert recs["4_random_s1"].status == "incomplete" and "killed" in recs["4_random_s1"].reason
    assert recs["5_random_s2"].status == "incomplete" and "no final analysis" in recs["5_random_s2"].reason
    assert recs["6_random_s3"].status == "failed" and "corrupt output" in recs["6_random_s3"].reason


def test_variants_drop_the_seed_logging_and_shared_overrides(sweep):
    runs, _ = find_runs([sweep])
    labels, shared = variant_labels([read_run(p) for p in runs])
    assert shared == [] and labels[sweep / "0_reward_s1"] == "task=counting aux=reward"  # run x shares nothing
    labels, shared = variant_labels([read_run(p) for p in runs if p.name != "x"])
    assert shared == ["task=counting"]
    assert labels[sweep / "0_reward_s1"] == labels[sweep / "1_reward_s2"] == "aux=reward"


def test_how_often_a_run_is_analysed_or_saved_is_not_a_variant(tmp_path):
    runs = [
        make_run(tmp_path / "a", ["aux=reward", "analysis.every=500", "checkpoint.every=500"], 1, acc=0.5),
        make_run(tmp_path / "b", ["aux=reward", "threads=2"], 2, acc=0.6),
        make_run(tmp_path / "c", ["aux=reward", "analysis.num_obs=64"], 3, acc=0.6),  # another monitoring set is a variant
    ]
    labels, _ = variant_labels([read_run(p) for p in runs])
    assert labels[runs[0]] == labels[runs[1]] != labels[runs[2]]


def test_interval_is_the_mean_or_iqm_with_a_ci_that_holds_it():
    value, lo, hi = interval(np.array([[0.5], [0.7], [0.6]]), "mean", reps=2000, seed=0)
    assert value[0] == pytest.approx(0.6) and 0.5 <= lo[0] <= 0.6 <= hi[0] <= 0.7
    value, lo, hi = interval(np.array([[0.0], [10.0], [11.0], [12.0], [1000.0]]), "iqm", reps=2000, seed=0)
    assert 10.0 <= value[0] <= 12.0  # the outliers trimmed (rliable's IQM)
    value, lo, hi = interval(np.array([[0.4]]), "mean", reps=2000, seed=0)
    assert value[0] == 0.4 and np.isnan(lo[0]) and np.isnan(hi[0])  # one seed: no interval
    again = interval(np.array([[0.5], [0.7], [0.6]]), "mean", reps=2000, seed=0)
    assert again[1][0] == interval(np.array([[0.5], [0.7], [0.6]]), "mean", reps=2000, seed=0)[1][0]  # seeded


def test_success_is_no_score_on_tasks_without_one(tmp_path):
    """Runs from before tasks declared their success logged a rate of 0 on DMC (never terminates): the
    report shows no success for them, and keeps it where termination is the goal (counting)."""
    dmc = make_run(tmp_path / "dmc", ["agent=tdmpc2"], 1, returns=[600.0], task={"suite": "dmc", "name": "cartpole-swingup"})
    counting = make_run(tmp_path / "counting", ["agent=tdmpc2"], 1, returns=[600.0], task={"suite": "counting"})
    assert np.isnan(read_run(dmc).final["success"]) and read_run(dmc).final["return"] == 600.0
    assert read_run(counting).final["success"] == 1.0


def test_report_cli_writes_tables_and_curves(sweep, tmp_path, capsys):
    online = tmp_path / "online"
    make_run(online / "a1", ["agent=tdmpc2", "aux=reward"], 1, returns=[100.0, 600.0])
    make_run(online / "a2", ["agent=tdmpc2", "aux=reward"], 2, returns=[200.0, 800.0])
    make_run(online / "b1", ["agent=tdmpc2", "aux=none"], 1, returns=[50.0, 300.0])
    make_run(online / "b2", ["agent=tdmpc2", "aux=none"], 2, returns=[60.0], status=None, steps=100)
    (online / "b2" / "eval.csv").write_text("step,eval/return,eval/success\n50,60.0,0.0\n")  # killed at 50 of 100
    out = report.main([str(sweep), str(online), f"out={tmp_path / 'rep'}", "reps=500"])
    text = capsys.readouterr().out
    assert out == tmp_path / "rep" and (out / "report.md").read_text() in text
    rows = {(r["variant"], r["metric"]): r for r in csv.DictReader((out / "report.csv").open())}
    reward = rows[("task=counting aux=reward", "heldout_centroid_acc")]
    assert (reward["n"], reward["estimator"]) == ("2", "mean") and float(reward["value"]) == pytest.approx(0.85)
    assert 0.8 <= float(reward["ci_low"]) <= 0.85 <= float(reward["ci_high"]) <= 0.9
    assert rows[("task=counting aux=none", "heldout_centroid_acc")]["n"] == "1"  # the failed seed is not averaged
    ret = rows[("agent=tdmpc2 aux=reward", "return")]
    assert ret["estimator"] == "iqm" and float(ret["value"]) == pytest.approx(700.0)
    assert rows[("agent=tdmpc2 aux=reward", "success")]["value"] == "1.0"
    assert "| task=counting aux=reward | 2/2 |" in text and "| task=counting aux=random | 0/3 |" in text
    listed = {r["path"].rsplit("/", 1)[-1]: r["status"] for r in csv.DictReader((out / "runs.csv").open())}
    assert listed["3_none_s2"] == "failed" and listed["7_died"] == "failed" and listed["job 8"] == "failed"
    assert text.count("(failed)") + text.count("(incomplete)") == 8
    assert listed["b2"] == "incomplete" and "last evaluation at step 50 of 100" in text
    assert (out / "curves.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "argv, message",
    [([], "give one or more directories"), (["/no/such/dir"], "does not exist"), (["{tmp}", "reps=5"], "reps must be >= 100"),
     (["{tmp}", "reps=x"], "integers"), (["{tmp}"], "no run directories")],
)  # fmt: skip
def test_report_bad_input_is_refused(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        report.main([a.format(tmp=tmp_path) for a in argv])


def test_status_file_round_trip_and_corruption(tmp_path):
    assert read_status(tmp_path) is None
    write_status(tmp_path, "complete", step=5)
    assert read_status(tmp_path)["step"] == 5 and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="unknown run state"):
        write_status(tmp_path, "done")
    (tmp_path / "status.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        read_status(tmp_path)
