"""Non-finite optimiser steps: checked at once on a CPU; recorded on the device and raised at the run's next
check on a GPU (the deferred watch, forced here on the CPU). Either way nothing non-finite is logged, saved
or acted on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agent.agents.finite import FiniteWatch, NonFiniteLossError
from agent.agents.update import optimizer_step
from agent.run.checkpoint import load_checkpoint
from agent.run.representation import Trainer


def _steps(watch: FiniteWatch, scales: list[float]) -> nn.Linear:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    for scale in scales:
        loss = net(torch.ones(2, 3)).pow(2).mean() * scale
        optimizer_step(optim, loss, 1.0, "world-model", {"dyn": loss, "aux": loss.detach() * 0}, watch)
    return net


def test_a_watch_that_checks_at_once_raises_before_the_step():
    net = _steps(FiniteWatch(deferred=False), [1.0])
    before = [p.detach().clone() for p in net.parameters()]
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite world-model loss: \{'dyn': nan"):
        loss = net(torch.ones(2, 3)).sum() * float("nan")
        optimizer_step(optim, loss, 1.0, "world-model", {"dyn": loss}, FiniteWatch())  # None: at once on a CPU
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_a_deferred_watch_names_the_first_non_finite_step_when_asked():
    watch = FiniteWatch(deferred=True)
    _steps(watch, [1.0, 1.0])
    watch.raise_if_bad()  # all finite: nothing to say
    watch = FiniteWatch(deferred=True)
    _steps(watch, [1.0, 1.0, float("nan"), 1.0, float("inf")])  # no raise while stepping: the record waits
    for _ in range(2):  # asked again, it says so again
        with pytest.raises(NonFiniteLossError, match=r"world-model loss or gradient 3 optimiser step\(s\) before this check.*'dyn': nan, 'aux': nan"):
            watch.raise_if_bad()
    FiniteWatch(deferred=True).raise_if_bad()  # nothing recorded


def test_a_deferred_watch_names_the_loss_that_went_first():
    """In TD-MPC2 a NaN policy step poisons the next world-model step (its Q targets): the policy is named."""
    watch, one, nan = FiniteWatch(deferred=True), torch.ones(()), torch.tensor(float("nan"))
    for wm, pi in ((one, one), (one, nan), (nan, nan)):
        watch.grads("world-model", wm, one, {"dyn": wm})
        watch.grads("policy", pi, one)
    with pytest.raises(NonFiniteLossError, match=r"non-finite policy loss or gradient 3 optimiser step\(s\) before this check.*'policy': nan"):
        watch.raise_if_bad()


def test_deferred_nan_stops_the_representation_run_before_its_next_row_or_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg("steps=12", "analysis.every=0"), tmp_path)  # log.every=3, checkpoint.every=6
    trainer.agent.finite = FiniteWatch(deferred=True)  # as on a GPU
    real = trainer.agent.losses  # 9 world-model steps and 3 of the probe (every 4th): 12, the 10th bad

    def poisoned(batch):
        terms, z = real(batch)
        if trainer.step >= 7:  # the 8th update on
            terms["dyn"] = terms["dyn"] * float("nan")
        return terms, z

    monkeypatch.setattr(trainer.agent, "losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 9: non-finite world-model loss or gradient 3 optimiser step\(s\) before.*last good checkpoint"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6
    assert [line.split(",")[0] for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]] == ["3", "6"]


def test_deferred_nan_stops_the_online_run_before_the_env_takes_an_action(tmp_path):
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    cfg = online_cfg("task=gym/Pendulum-v1", "aux=none", "task.episode_length=20", "agent.total_steps=60", "agent.eval_every=30")
    trainer = OnlineTrainer(cfg, tmp_path)
    trainer.agent.finite = FiniteWatch(deferred=True)
    real = trainer.agent._wm_losses

    def poisoned(agent, batch):
        total, terms, rollout = real(agent, batch)
        return (total * float("nan"), terms, rollout) if trainer.step >= 45 else (total, terms, rollout)

    trainer.agent._wm_losses = poisoned
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 45: non-finite world-model loss or gradient 2 optimiser step"):  # its policy step after it
        trainer.run()
    assert len(trainer.buffer) == 45 and torch.isfinite(trainer.buffer.stored()["action"]).all()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 30


def test_a_non_finite_plan_is_never_acted_on(tmp_path):
    """Finite weights, a plan gone NaN (e.g. an overflow in its own maths): the run stops before the env takes it."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    cfg = online_cfg("task=gym/Pendulum-v1", "aux=none", "task.episode_length=20", "agent.total_steps=60", "agent.eval_every=30")
    trainer = OnlineTrainer(cfg, tmp_path)
    real = trainer.agent.act

    def overflowing(obs, eval_mode=False, use_planner=True):
        action = real(obs, eval_mode=eval_mode, use_planner=use_planner)
        return action * float("nan") if trainer.step >= 40 and not eval_mode else action

    trainer.agent.act = overflowing
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 40: the planner's action is not finite"):
        trainer.run()
    assert len(trainer.buffer) == 40 and torch.isfinite(trainer.buffer.stored()["action"]).all()
