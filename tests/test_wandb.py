"""``log.wandb=true`` in offline mode: no network, the run's rows and its sweep / variant grouping on disk."""

from __future__ import annotations

import time

import pytest

from agent.run.representation import Trainer
from agent.run.wandb_log import run_identity

pytest.importorskip("wandb")


def test_offline_wandb_run_holds_the_metrics_and_the_grouping(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "sweep_2026" / "3_job"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- task=counting\n- aux=none\n- seed=3\n- log.wandb=true\n")
    ident = run_identity(run_dir)
    assert (ident["group"], ident["job_type"], ident["name"]) == ("sweep_2026", "task=counting aux=none", "3_job")
    Trainer(tiny_cfg("aux=none", "log.wandb=true", "steps=6", "analysis.every=0"), run_dir).run()
    Trainer(tiny_cfg("aux=none", "log.wandb=true", "steps=12", "analysis.every=0"), run_dir).run()  # resumed
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[-1] for r in runs} == {ident["id"]}  # one W&B run id
    want = (b"loss/dyn", b"loss/total", b"repr/heldout_centroid_acc", b"task=counting aux=none", b"sweep_2026")
    # W&B's service process writes the file; once (in CI, on a loaded 2-core machine) it held only its 7-byte
    # header right after finish() returned, so the file is read again for up to 30 s before the check
    deadline = time.monotonic() + 30
    while True:
        data = next(runs[-1].glob("run-*.wandb")).read_bytes()
        if all(text in data for text in want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for text in want:
        assert text in data, (text, len(data))


def test_bad_wandb_mode_is_refused_before_any_work(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="log.wandb_mode='cloud': must be one of 'offline', 'online'"):
        Trainer(tiny_cfg("log.wandb=true", "log.wandb_mode=cloud"), tmp_path)
    assert not (tmp_path / "wandb").exists()
