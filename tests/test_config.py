"""A strict config: out-of-range values and keys a job would ignore fail at start, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.agents.factory import to_dict
from agent.agents.update import lr_scale
from agent.run.config import check_keys
from agent.run.representation import Trainer
from agent.run.settings import (
    OnlineSettings,
    RepresentationSettings,
    documented,
    load_settings,
)
from tests.conftest import ROOT, compose_cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steps=-5"], "steps=-5: must be an integer >= 1"),
        (["batch_size=0"], "batch_size=0: must be an integer >= 1"),
        (["horizon=0"], "horizon=0: must be an integer >= 1"),
        (["rho=0"], "rho=0: must be a number > 0 and <= 1"),
        (["checkpoint.every=0"], "checkpoint.every=0"),
        (["log.every=0"], "log.every=0"),
        (["optim.lr=-1"], "optim.lr=-1"),
        (["data.action_hold=0"], "data.action_hold=0"),
        (["steps=2.5"], "steps=2.5: must be an integer"),
        (["agent=tdmpc2", "agent.total_steps=-5"], "agent.total_steps=-5"),
        (["agent=tdmpc2", "agent.eval_episodes=0"], "agent.eval_episodes=0"),
        (["agent=tdmpc2", "agent.eval_every=0"], "agent.eval_every=0"),
        (["agent=tdmpc2", "agent.planner.num_elites=600"], "num_elites=600: must be <= agent.planner.num_samples=512"),
        (["agent=tdmpc2", "two_hot.vmin=5", "two_hot.vmax=5"], "two_hot.vmin=5.*need vmin < vmax"),
        (["two_hot.num_bins=1"], "two_hot.num_bins=1: must be an integer >= 2"),
        (["optim.drop_at=null"], "optim.schedule=step needs optim.drop_at"),  # the counting recipe's schedule
        (["optim.drop_at=0"], "optim.drop_at=0: must be an integer >= 1"),
        (["optim.schedule=cosine"], r"optim.drop_at=9000: only optim.schedule=step reads it .*add optim.drop_at=null"),
        (["perf.compile_mode=reduce-overhead"], r"perf.compile_mode=reduce-overhead: only perf.compile=true \(or auto\) reads it"),
        (["agent=tdmpc2", "perf.compile_mode=max-autotune"], r"perf.compile_mode=max-autotune: only perf.compile=true \(or auto\) reads it"),
        (["perf.compile=sometimes"], r"perf.compile='sometimes': must be one of true, false, 'auto'"),
        (["perf.compile=true", "perf.compile_mode=fast"], r"perf.compile_mode='fast': must be one of"),
        (["agent=tdmpc2", "perf.fused_adam=maybe"], r"perf.fused_adam='maybe': must be one of true, false$"),
    ],
)
def test_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_settings(to_dict(compose_cfg(*overrides)))


def test_every_bad_value_is_reported_at_once_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)(?=.*steps=-5)(?=.*horizon=0)(?=.*checkpoint.every=0)"):
        Trainer(compose_cfg("steps=-5", "horizon=0", "checkpoint.every=0"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_run_shorter_than_the_rate_drop_is_the_start_of_the_long_one():
    s = load_settings(to_dict(compose_cfg()))  # the counting recipe: the rate drops at update 9000
    assert (s.optim.schedule, s.optim.drop_at, s.steps) == ("step", 9000, 12)
    assert {lr_scale(s.optim.schedule, k, s.steps, s.optim.min_lr_scale, s.optim.drop_at) for k in range(s.steps)} == {1.0}
    cosine = load_settings(to_dict(compose_cfg("optim.schedule=cosine", "optim.drop_at=null")))
    assert cosine.optim.drop_at is None


def test_defaults_of_both_jobs_pass():
    load_settings(to_dict(compose_cfg()))
    load_settings(to_dict(compose_cfg("agent=tdmpc2", "task=dmc/reacher-easy")))
    load_settings(to_dict(compose_cfg("experiment=paper", "aux=random")))


def test_settings_are_typed_and_documented():
    rep = load_settings(to_dict(compose_cfg("data.num_envs=3", "optim.eps=1e-6")))
    assert isinstance(rep, RepresentationSettings) and (rep.data.num_envs, rep.optim.eps, rep.steps) == (3, 1e-6, 12)
    online = load_settings(to_dict(compose_cfg("agent=tdmpc2", "agent.planner.num_samples=64")))
    assert isinstance(online, OnlineSettings) and online.agent.planner.num_samples == 64
    for cls in (RepresentationSettings, OnlineSettings):
        docs = documented(cls)
        assert "optim.lr" in docs and all(docs.values()), [k for k, v in docs.items() if not v]
    with pytest.raises(AttributeError):
        rep.steps = 5  # frozen: read once, never changed under the loop


def test_settings_cover_every_key_of_both_jobs():
    """Each leaf of the composed configs is a field of its job's settings (or inside a plain group)."""
    from agent.run.config import flat_keys

    plain_groups = ("task.", "model.", "aux.", "preset.", "loss_scales.", "agent.loss_scales.", "agent.name")
    for overrides, cls in (((), RepresentationSettings), (("agent=tdmpc2",), OnlineSettings)):
        keys = {k for k in flat_keys(to_dict(compose_cfg(*overrides))) if not k.startswith(plain_groups)}
        assert keys <= set(documented(cls)), keys - set(documented(cls))


def test_a_missing_setting_is_named():
    cfg = to_dict(compose_cfg())
    del cfg["data"]["num_envs"]
    with pytest.raises(ValueError, match="data.num_envs: missing"):
        load_settings(cfg)
    del cfg["optim"]["eps"]  # a config from before optim.eps: Adam's default
    cfg["data"]["num_envs"] = 2
    assert load_settings(cfg).optim.eps == 1e-8


def test_keys_a_job_would_ignore_are_named():
    base = to_dict(compose_cfg("agent=tdmpc2"))
    with pytest.raises(ValueError, match=r"analysis.every, .*probe.every, steps: not a setting of this job \(agent=tdmpc2\)"):
        check_keys(to_dict(compose_cfg("agent=tdmpc2", "experiment=paper")), base, "agent=tdmpc2")
    with pytest.raises(ValueError, match="foo: not a setting"):
        check_keys(to_dict(compose_cfg("+foo=1")), to_dict(compose_cfg()), "agent=pjepa")
    check_keys(to_dict(compose_cfg("experiment=paper", "aux=random")), to_dict(compose_cfg("aux=random")), "agent=pjepa")


def test_cli_refuses_unknown_and_ignored_keys(tmp_path):
    def train(*args):
        cmd = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path}"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)

    out = train("+foo=1")
    assert out.returncode == 2 and "foo: not a setting of this job (agent=pjepa)" in out.stderr + out.stdout
    out = train("agent=tdmpc2", "steps=5")
    assert out.returncode != 0 and "Key 'steps' is not in struct" in out.stderr
    out = train("steps=-5")
    assert out.returncode == 2 and "steps=-5: must be an integer >= 1" in out.stderr + out.stdout
    assert not (tmp_path / "checkpoints").exists()


def test_two_hot_bins_are_defined_once_for_every_head():
    from agent.agents.factory import build_tdmpc_agent, tdmpc_signature

    cfg = to_dict(compose_cfg("agent=tdmpc2", "task=gym/Pendulum-v1", "two_hot.num_bins=51", "two_hot.vmax=5"))
    agent = build_tdmpc_agent(cfg, (3,), 1)
    assert (agent.model.num_bins, agent.model.vmax) == (51, 5) and (agent.aux.num_bins, agent.aux.vmax) == (51, 5)
    assert agent.model.reward_head[-1].out_features == 51
    with pytest.raises(ValueError, match="agent.num_bins: not a setting"):  # the old place of the bins
        check_keys(to_dict(compose_cfg("agent=tdmpc2", "+agent.num_bins=51")), to_dict(compose_cfg("agent=tdmpc2")), "agent=tdmpc2")
    legacy = {**cfg, "agent": {**cfg["agent"], "num_bins": 51, "vmin": -10.0, "vmax": 5}}
    del legacy["two_hot"]  # a config saved in a checkpoint before two_hot: same model, same signature
    assert tdmpc_signature(legacy, (3,), 1) == tdmpc_signature(cfg, (3,), 1)


def test_threads_setting_is_explicit_and_checked(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        Trainer(compose_cfg("threads=1"), tmp_path / "a")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads=0: must be an integer >= 1 or null"):
        Trainer(compose_cfg("threads=0"), tmp_path / "b")
