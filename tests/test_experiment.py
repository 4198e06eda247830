"""``experiment=paper``: the reference code's counting settings, composable with every row."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra import compose, initialize_config_dir

from agent.agents.factory import build_agent, build_tdmpc_agent
from agent.run.representation import Trainer
from tests.conftest import ROOT

ROWS = list(itertools.product(("reward", "random", "none"), ("joint", "separate", "aux_only"), ("dense", "sparse")))
# a few CPU steps of the paper's settings: one ResNet block per stage, a tiny batch and monitoring set
SMALL = ["model.resnet_blocks=1", "batch_size=4", "steps=2", "data.seed_frames=30", "probe.batch_size=2", "analysis.every=0",
         "checkpoint.every=2", "analysis.num_obs=16", "analysis.heldout_num_obs=16", "data.buffer_size=200"]  # fmt: skip


def paper(*overrides: str):
    """The run config of ``train.py experiment=paper <overrides>`` (no tiny preset: the paper's model; eager)."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=["experiment=paper", "log.progress=false", "log.tensorboard=false", "perf.compile=false", *overrides])


@pytest.mark.parametrize("aux, routing, reward", ROWS)
def test_paper_composes_with_every_row(aux, routing, reward):
    cfg = paper(f"aux={aux}", f"routing={routing}", f"task.reward_type={reward}")
    assert (cfg.routing, cfg.task.reward_type) == (routing, reward)  # the row wins over the experiment
    assert cfg.model.name == "paper" and cfg.model.pixel_encoder == "resnet" and cfg.model.resnet_blocks == 8
    assert cfg.model.shift_pad == 0 and cfg.model.dyn_layers == 1 and cfg.model.mlp_dim == 512
    assert (cfg.optim.enc_lr_scale, cfg.optim.grad_clip, cfg.loss_scales.dyn) == (0.3, 200.0, 2.0)
    assert (cfg.data.num_envs, cfg.data.frames_per_collect, cfg.data.action_hold, cfg.data.hold_across_resets) == (1, 1, 5, True)
    assert cfg.loss_scales.aux == (1.0 if aux == "random" else 2.0)
    assert (cfg.perf.precision, cfg.probe.every, cfg.steps) == ("fp32", 1, 300000)  # not the CPU recipe's
    assert (cfg.optim.schedule, cfg.optim.drop_at) == ("constant", None)  # nor its rate drop
    if aux == "random":
        assert cfg.aux.net == "linear" and cfg.aux.hidden_dim == 512
    if aux == "reward":
        assert cfg.aux.hidden_dim == 512 and cfg.aux.num_bins == 101


@pytest.mark.parametrize("aux", ["reward", "random", "none"])
def test_paper_builds_the_reference_model(aux):
    agent = build_agent(paper(f"aux={aux}"), (3, 64, 64), 1)
    groups = agent.optim.param_groups
    assert groups[0]["lr"] == pytest.approx(3e-4 * 0.3) and groups[1]["lr"] == pytest.approx(3e-4)
    z = agent.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert z.shape == (2, 256)


@pytest.mark.slow
@pytest.mark.parametrize("aux", ["reward", "random"])
def test_paper_trains_a_few_steps_on_the_cpu(tmp_path, aux):
    out = Trainer(paper(f"aux={aux}", *SMALL), tmp_path).run()
    assert out["heldout_centroid_acc"] is not None
    assert (tmp_path / "analysis" / "curves.png").is_file()


@pytest.mark.parametrize("task", [["task=gym/Pendulum-v1", "~task.reward_type"], ["task=counting", "task.obs_type=state"]])
def test_paper_on_a_non_pixel_task_fails_at_start(tmp_path, task):
    with pytest.raises(ValueError, match=r"experiment=paper (sets up the paper's pixel runs|needs pixel observations)"):
        Trainer(paper(*task, "aux=random", *SMALL), tmp_path)
    assert not any(tmp_path.iterdir())  # before any work


def test_paper_encoder_on_state_observations_names_the_problem():
    with pytest.raises(ValueError, match="'pixels' encoder but the task's observations are state"):
        build_agent(paper("aux=random"), (3,), 1)


def test_the_main_job_runs_the_counting_recipe_and_the_online_agent_does_not():
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        main = compose("config", overrides=["task=counting"])
        online = compose("config", overrides=["task=counting", "agent=tdmpc2"])
        gym = compose("config", overrides=["task=gym/Pendulum-v1"])
        mine = compose("config", overrides=["task=counting", "task.reward_type=sparse", "model=small"])
    assert (main.model.name, main.model.pixel_encoder, main.model.shift_pad) == ("counting", "pooled", 0)
    assert (main.task.reward_type, main.loss_scales.aux, main.perf.precision, main.probe.every, main.steps) == ("dense", 5.0, "auto", 4, 14000)
    assert (main.optim.schedule, main.optim.drop_at, main.optim.min_lr_scale) == ("step", 9000, 0.3333)
    assert (online.model.name, online.task.reward_type) == ("small", "sparse")
    assert "reward_type" not in gym.task and gym.loss_scales.aux == 1.0
    assert (mine.task.reward_type, mine.model.name) == ("sparse", "small")  # the command line still wins


def test_model_1m_is_tdmpc2s_1m_size_with_two_q_heads():
    """TD-MPC2's MODEL_SIZE gives its 1M model 2 Q heads and 5 from 5M up (configs/size/tdmpc2/1m.yaml)."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        one = compose("config", overrides=["agent=tdmpc2", "task=dmc/walker-walk", "model=1m", "perf.compile=false"])
        five = compose("config", overrides=["agent=tdmpc2", "task=dmc/walker-walk", "model=5m"])
        mine = compose("config", overrides=["agent=tdmpc2", "task=dmc/walker-walk", "model=1m", "agent.num_q=4"])
        rep = compose("config", overrides=["task=counting", "model=1m"])
    assert (one.agent.num_q, five.agent.num_q, mine.agent.num_q) == (2, 5, 4)  # the command line still wins
    assert "num_q" not in rep.get("agent", {})  # the representation job has no Q ensemble
    assert build_tdmpc_agent(one, (24,), 6).model.qs.num_q == 2
