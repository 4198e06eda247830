"""Online TD-MPC2 on P-JEPA: a smoke run of each suite through the CLI, the evaluation CLI, and learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

from tests.conftest import ROOT

SMALL = [
    "agent=tdmpc2", "model=tiny", "batch_size=16", "agent.total_steps=120", "agent.seed_steps=40",
    "agent.eval_every=60", "agent.eval_episodes=2", "agent.planner.num_samples=32", "agent.planner.num_elites=4",
    "agent.planner.num_pi_trajs=4", "agent.planner.iterations=2", "log.every=20", "log.progress=false",
    "log.tensorboard=false", "perf.compile=false",
]  # fmt: skip


def run(module_or_script: list[str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *module_or_script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",
    [
        ["task=counting", "aux=reward", "agent.horizon=1", "agent.collect=random"],
        ["task=gym/Pendulum-v1", "aux=none", "task.episode_length=40"],
        ["task=dmc/cartpole-swingup", "aux=random", "task.episode_length=80"],
        ["task=dmc/reacher-easy", "task.obs_type=pixels", "aux=none", "task.episode_length=80"],
    ],
    ids=["counting", "gym-pendulum", "dmc-state", "dmc-pixels"],
)
def test_online_smoke_run_of_each_suite(tmp_path, task):
    proc = run([str(ROOT / "train.py")], *SMALL, *task, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    header = (tmp_path / "metrics.csv").read_text().split("\n")[0]
    for key in ("loss/dyn", "loss/reward", "loss/value", "loss/pi"):
        assert key in header
    evals = (tmp_path / "eval.csv").read_text().strip().split("\n")
    assert len(evals) == 3  # header + steps 60 and 120
    assert ("eval/success" in evals[0]) == (task[0] == "task=counting")  # the only one of these with a success rate
    assert (tmp_path / "eval" / "step_0000120.json").is_file()


@pytest.mark.slow
def test_eval_cli_writes_json_and_video(tmp_path):
    proc = run([str(ROOT / "train.py")], *SMALL, "task=counting", "agent.horizon=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run(["-m", "agent.evaluate"], f"run_dir={tmp_path}", "episodes=3")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["compiled"] is False  # the run's perf.compile=false
    for mode in ("planner", "policy_prior"):
        assert result[mode]["episodes"] == 3 and 0 <= result[mode]["success_rate"] <= 1
        assert len(result[mode]["returns"]) == 3 and result[mode]["return_mean"] == pytest.approx(sum(result[mode]["returns"]) / 3)
    frames = iio.imread(tmp_path / "episode.gif", index=None)
    assert frames.shape[-3:-1] == (64, 64) and len(frames) >= 1
    from agent.evaluate import main

    for bad in ("-1", "0", "two"):
        with pytest.raises(SystemExit, match="episodes must be an integer >= 1"):
            main([f"run_dir={tmp_path}", f"episodes={bad}"])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=r"could not write the evaluation to .*a_file/sub.*printed above"):
        main([f"run_dir={tmp_path}", "episodes=1", f"out={blocker / 'sub'}"])


def test_eval_cli_refuses_a_representation_checkpoint(tiny_cfg, tmp_path):
    from agent.agents.factory import load_online_agent
    from agent.run.checkpoint import CheckpointError
    from agent.run.representation import Trainer

    Trainer(tiny_cfg("steps=3", "analysis.every=0"), tmp_path).run()
    with pytest.raises(CheckpointError, match="not a TD-MPC2"):
        load_online_agent(tmp_path)


def online_cfg(*overrides: str):
    from tests.conftest import compose_cfg

    return compose_cfg(*[o for o in SMALL if not o.startswith("log.every")], "log.every=10", *overrides)


def test_online_run_resumes_from_its_checkpoint(tmp_path):
    from agent.run.checkpoint import load_checkpoint
    from agent.run.online import OnlineTrainer

    task = ("task=gym/Pendulum-v1", "aux=none", "task.episode_length=40")
    first = OnlineTrainer(online_cfg(*task, "agent.total_steps=60"), tmp_path)
    first.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 60
    trainer = OnlineTrainer(online_cfg(*task, "agent.total_steps=120"), tmp_path)
    # one finished episode, one cut at step 60 (id 1): the resumed run goes on inside episode 1, its
    # replay buffer rebuilt by replaying the run's actions (no buffer file is stored)
    assert trainer.step == 60 and trainer.episode == 1
    assert len(trainer.buffer) == 60 and (trainer.buffer.stored() == first.buffer.stored()).all()
    assert torch.equal(trainer._td["observation"], first._td["observation"])  # the env stands where it stood
    trainer.run()
    episodes = trainer.buffer.stored()["episode"]
    assert episodes[59] == 1 and episodes[60] == 1  # the interrupted episode goes on
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 120
    assert (tmp_path / "eval.csv").read_text().count("\n") == 3  # header, 60, 120: rows kept across the resume


def test_online_checkpoints_store_no_buffer_file(tmp_path):
    from agent.run.online import OnlineTrainer

    task = ("task=gym/Pendulum-v1", "aux=none", "task.episode_length=40", "agent.total_steps=50", "agent.eval_every=50")
    OnlineTrainer(online_cfg(*task), tmp_path).run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_0000050.pt"]


def test_online_bad_setups_fail_at_start(tmp_path):
    from agent.run.online import OnlineTrainer

    with pytest.raises(ValueError, match="use agent.horizon=1"):
        OnlineTrainer(online_cfg("task=counting", "agent.horizon=3"), tmp_path / "b")
    with pytest.raises(ValueError, match="agent.collect='mixed': must be one of 'planner', 'random'"):
        OnlineTrainer(online_cfg("task=counting", "agent.horizon=1", "agent.collect=mixed"), tmp_path / "c")
    with pytest.raises(ValueError, match="updates_per_step=0: must be an integer >= 1"):
        OnlineTrainer(online_cfg("task=counting", "agent.horizon=1", "agent.updates_per_step=0"), tmp_path / "d")


def test_paper_random_collection_holds_actions(tmp_path):
    from agent.run.online import OnlineTrainer

    trainer = OnlineTrainer(online_cfg("task=counting", "agent.horizon=1", "agent.collect=random"), tmp_path)
    td = trainer.env.reset()
    td.set("step_count", torch.tensor([[1]]))
    first = trainer._act(td.clone().set("step_count", torch.tensor([[0]])), random=True)
    assert torch.equal(trainer._act(td, random=True), first)  # held within the repeat window


def test_seed_step_actions_do_not_depend_on_the_model(tmp_path):
    """Runs that differ only in aux (so in the model built before acting) take the same seed-step actions."""
    from agent.run.online import OnlineTrainer

    actions = []
    for aux in ("none", "random"):
        trainer = OnlineTrainer(online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", f"aux={aux}"), tmp_path / aux)
        td = trainer.env.reset()
        actions.append(torch.stack([trainer._act(td, random=True) for _ in range(4)]))
    assert torch.equal(actions[0], actions[1])  # paired across aux rows
    assert len(set(actions[0].flatten().tolist())) == 4  # and drawn anew each seed step (no hold)


def test_seed_steps_end_with_a_burst_of_pretraining_updates(tmp_path, monkeypatch):
    from agent.run.online import OnlineTrainer

    cfg = online_cfg("task=gym/Pendulum-v1", "aux=none", "task.episode_length=20", "agent.total_steps=50", "agent.pretrain_updates=7")
    trainer = OnlineTrainer(cfg, tmp_path)
    real, at = trainer.agent.update, []
    monkeypatch.setattr(trainer.agent, "update", lambda batch: at.append(trainer.step) or real(batch))
    trainer.run()
    assert at.count(40) == 7 and at[7:] == list(range(41, 51))  # burst at seed_steps=40, then 1 per step


@pytest.mark.slow
def test_agent_learns_counting_from_the_count(tmp_path):
    """End to end without perception: with the count as observation, the agent must plan to the
    target. Random play succeeds 0.33-0.44 of the time, the optimum is 1; seeds 1-3 scored 0.92-1.0
    here. (With model=tiny the reward and Q heads are still constant after 400 updates while the
    termination head has learned, and the planner steers away from the target: success 0.)"""
    from agent.run.online import OnlineTrainer

    cfg = online_cfg(
        "task=counting", "task.obs_type=state", "model=small", "agent.horizon=1", "agent.collect=random",
        "batch_size=64", "agent.total_steps=600", "agent.seed_steps=200", "agent.eval_every=600", "agent.eval_episodes=50",
    )  # fmt: skip
    result = OnlineTrainer(cfg, tmp_path).run()
    assert result["success_rate"] >= 0.8, result


def test_online_time_limit_ends_the_run_evaluated_and_saved(tmp_path):
    from agent.run.checkpoint import load_checkpoint
    from agent.run.online import OnlineTrainer

    task = ("task=gym/Pendulum-v1", "aux=none", "task.episode_length=40", "agent.total_steps=60")
    OnlineTrainer(online_cfg(*task, "time_limit=1e-9"), tmp_path).run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert (tmp_path / "eval" / "step_0000001.json").exists()
    with pytest.raises(ValueError, match="time_limit=-2: must be a number > 0"):
        OnlineTrainer(online_cfg(*task, "time_limit=-2"), tmp_path / "bad")


def test_resume_right_after_the_pretraining_burst_does_not_repeat_it(tmp_path):
    from agent.run.online import OnlineTrainer

    task = ("task=gym/Pendulum-v1", "aux=none", "task.episode_length=20", "agent.pretrain_updates=7", "agent.eval_every=40")
    OnlineTrainer(online_cfg(*task, "agent.total_steps=40"), tmp_path / "a").run()  # checkpoint at step == seed_steps
    resumed = OnlineTrainer(online_cfg(*task, "agent.total_steps=50"), tmp_path / "a")
    assert resumed.pretrained
    resumed.run()
    unbroken = OnlineTrainer(online_cfg(*task, "agent.total_steps=50"), tmp_path / "b")
    unbroken.run()

    def adam_steps(t):
        return {int(s["step"]) for s in t.agent.optim.state_dict()["state"].values()}

    assert adam_steps(resumed) == adam_steps(unbroken) == {7 + 10}


@pytest.mark.parametrize(
    ("task", "stack"),
    [(("task=counting", "aux=reward", "agent.horizon=1"), 1),
     (("task=dmc/cartpole-swingup", "task.obs_type=pixels", "task.episode_length=40", "aux=none"), 3)],
    ids=["counting", "dmc-pixels-stacked"],
)  # fmt: skip
def test_an_online_pixel_run_storing_each_frame_once_ends_where_one_storing_both_does(tmp_path, monkeypatch, task, stack):
    """Pixel observations are stored once (``obs_once``: one step per write, a tail kept only where an episode
    ends), and a stack of frames (DMC's 3) as its newest frame (``frame_stack``); storing both whole stacks,
    the same run: metrics, weights and buffer."""
    import numpy as np

    from agent.data.buffer import ReplayBuffer
    from agent.run.online import OnlineTrainer
    from tests.conftest import metrics_rows

    task = (*task, "agent.total_steps=60", "agent.seed_steps=20", "agent.eval_every=60")
    once = OnlineTrainer(online_cfg(*task), tmp_path / "once")
    assert once.buffer.obs_once and once.buffer.frame_stack == stack
    once.run()
    monkeypatch.setattr("agent.run.online.ReplayBuffer", lambda *a, **kw: ReplayBuffer(*a, **kw | {"obs_once": False, "frame_stack": 1}))
    both = OnlineTrainer(online_cfg(*task), tmp_path / "both")
    assert not both.buffer.obs_once
    both.run()
    np.testing.assert_array_equal(metrics_rows(tmp_path / "once"), metrics_rows(tmp_path / "both"))
    assert (once.buffer.stored() == both.buffer.stored()).all() and once.buffer.tails < len(once.buffer) / 2
    for a, b in zip(once.agent.model.state_dict().values(), both.agent.model.state_dict().values()):
        assert torch.equal(a, b)
