"""The TD-MPC2 agent on P-JEPA: planner protocol, losses, one update, targets, acting."""

from __future__ import annotations

import pytest
import torch

from agent.agents.tdmpc import TDMPCAgent, TDMPCConfig
from agent.auxiliary import NoAux, RandomNetAux, RewardAux
from agent.models.tdmpc import TDMPCModel
from agent.models.world_model import WorldModel
from planner.mppi import MPPIConfig

H, B, OBS, A = 3, 16, (5,), 2
PLAN = MPPIConfig(horizon=2, iterations=2, num_samples=32, num_elites=4, num_pi_trajs=4)


def make_agent(aux_name: str = "none", episodic: bool = True, routing: str = "joint") -> TDMPCAgent:
    torch.manual_seed(0)
    wm = WorldModel(OBS, A, latent_dim=16, enc_dim=32, mlp_dim=32)
    model = TDMPCModel(wm, mlp_dim=32, num_q=3, num_bins=21, episodic=episodic)
    aux = {"none": NoAux, "random": RandomNetAux, "reward": RewardAux}[aux_name](16, OBS)
    return TDMPCAgent(model, aux, TDMPCConfig(routing=routing), PLAN)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(H + 1, B, *OBS, generator=g)
    return {
        "obs": obs,
        "action": torch.rand(H, B, A, generator=g) * 2 - 1,
        "reward": obs[1:, :, :1].tanh(),
        "terminated": (torch.rand(H, B, 1, generator=g) > 0.9).float(),
        "obs_reward": obs[:, :, :1].tanh(),
    }


def test_model_speaks_the_planner_protocol():
    agent = make_agent()
    z = agent.model.encode(torch.randn(4, *OBS))
    a = torch.rand(4, A) * 2 - 1
    m = agent.model
    assert m.next(z, a).shape == (4, 16) and m.reward(z, a).shape == (4, 1) and m.Q(z, a).shape == (4, 1)
    assert m.pi(z).shape == (4, A) and m.termination(z).shape == (4, 1)
    assert m.q_values(z, a).shape == (3, 4, 1)
    assert agent.act(torch.randn(4, *OBS), eval_mode=True).shape == (4, A)
    assert agent.act(torch.randn(4, *OBS), eval_mode=True, use_planner=False).shape == (4, A)


def test_not_episodic_means_never_terminal():
    m = make_agent(episodic=False).model
    z = torch.randn(5, 16)
    assert torch.equal(m.termination(z), torch.zeros(5, 1))


@pytest.mark.parametrize("aux", ["none", "random", "reward"])
def test_update_lowers_every_loss_on_a_fixed_batch(aux):
    agent = make_agent(aux)
    data = batch()
    first = agent.update(data)
    assert set(first) >= {"loss/dyn", "loss/reward", "loss/value", "loss/termination", "loss/total", "loss/pi", "grad_norm"}
    for _ in range(60):
        last = agent.update(data)
    for key in ("loss/reward", "loss/termination", "loss/total"):
        assert last[key] < first[key], f"{key}: {float(first[key]):.4g} -> {float(last[key]):.4g}"


def test_target_q_follows_by_polyak_and_policy_loss_reaches_only_the_policy():
    agent = make_agent()
    target0 = [p.clone() for p in agent.model.target_qs.parameters()]
    agent.update(batch())
    online = list(agent.model.qs.parameters())
    for t0, t1, o in zip(target0, agent.model.target_qs.parameters(), online):
        torch.testing.assert_close(t1, 0.99 * t0 + 0.01 * o)
    assert all(p.grad is None for p in agent.model.qs.parameters())  # no policy-loss leak into the next Q step
    from agent.losses.tdmpc import policy_loss

    agent.zero_grad(set_to_none=True)
    z = agent.model.encode(batch()["obs"])
    policy_loss(agent.model, z, agent.scale, 1e-4, 0.5).backward()
    assert all(p.grad is None for p in agent.model.wm.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.model.policy.parameters())


def test_policy_entropy_bonus_is_tdmpc2_scaled_gaussian_entropy():
    """The bonus is -A * (pre-squash Gaussian log-prob), rho-weighted, as TD-MPC2's scaled entropy."""
    from agent.losses.tdmpc import policy_loss
    from agent.models.heads import RunningScale

    m = make_agent().model
    z = torch.randn(H, B, 16)
    losses = []
    for coef in (0.0, 1.0):
        torch.manual_seed(3)  # the same policy noise and Q pair in both calls
        losses.append(policy_loss(m, z, RunningScale(), coef, 0.5))
    torch.manual_seed(3)
    sample = m.policy(z)
    rho = torch.tensor([1.0, 0.5, 0.25])[:, None, None]
    expected = (rho * sample.gaussian_log_prob * A).mean(dim=(1, 2)).mean()
    torch.testing.assert_close(losses[1] - losses[0], expected)


@pytest.mark.parametrize("routing", ["joint", "aux_only"])
def test_routing_holds_for_every_td_mpc2_term(routing):
    from agent.losses.tdmpc import world_model_losses

    agent = make_agent("random", routing=routing)
    for p in agent.model.reward_head[-1].parameters():  # zero-initialised heads pass no gradient at first
        torch.nn.init.normal_(p, std=0.1)
    for p in agent.model.qs.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    data = batch()
    target = agent.aux.target({"obs": data["obs"].flatten(0, 1)}).reshape(H + 1, B, -1)
    terms, _ = world_model_losses(agent.model, agent.aux, data, target, routing=routing, rho=0.5, detach_target=False, discount=0.99)
    enc = list(agent.model.wm.encoder.parameters())
    for name, term in terms.items():
        grads = torch.autograd.grad(term, enc, retain_graph=True, allow_unused=True)
        norm = sum(float(g.abs().sum()) for g in grads if g is not None)
        if routing == "aux_only" and name != "aux":
            assert norm == 0.0, f"aux_only: encoder got gradient from {name}"
        else:
            assert norm > 0, f"{routing}: encoder got no gradient from {name}"


def test_target_q_ensemble_never_drops_out():
    """TD-MPC2 keeps its target Qs in eval mode: the TD target has no dropout, the online Qs do."""
    agent = make_agent()
    agent.model.qs.drop.p = agent.model.target_qs.drop.p = 0.5
    for p in agent.model.target_qs.out.parameters():
        torch.nn.init.normal_(p)
    agent.train()
    assert agent.model.qs.training and not agent.model.target_qs.training
    z, a = torch.randn(8, 16), torch.rand(8, A)
    assert torch.equal(agent.model.q_logits(z, a, target=True), agent.model.q_logits(z, a, target=True))
    agent.update(batch())
    assert not agent.model.target_qs.training


def test_acting_and_updating_switch_every_module_as_train_and_eval_do():
    """The agent's mode switch (no walk) leaves each module's flag where ``train()`` / ``eval()`` would, the
    target Qs and the random network's target in eval mode included; a deep copy switches its own modules."""
    import copy

    agent, walked = make_agent("random"), make_agent("random")
    for mode in (False, True, False, True):
        agent._modes(mode)
        walked.train(mode)
        assert [m.training for m in agent.modules()] == [m.training for m in walked.modules()]
    assert not agent.model.target_qs.training and not agent.aux.net.training and agent.model.qs.training
    agent.act(batch()["obs"][0, :2])
    assert not any(m.training for m in agent.modules())
    twin = copy.deepcopy(agent)
    twin.update(batch())
    assert twin.model.qs.training and not agent.model.qs.training  # the copy's modules, not the original's


def test_adam_is_the_multi_tensor_form_with_the_loops_numbers_and_keeps_it_on_resume():
    from agent.agents.update import adam, load_optimizer

    torch.manual_seed(0)
    start = [torch.randn(50, 7), torch.randn(7), torch.randn(3, 3)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(10)]
    ends = []
    for make in (lambda ps: torch.optim.Adam(ps, lr=1e-3, eps=1e-8), lambda ps: adam(ps, 1e-3, 1e-8)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(params)
        for g in grads:
            for p, gg in zip(params, g):
                p.grad = gg.clone()
            opt.step()
        ends.append((params, opt))
    assert all(torch.equal(a, b) for a, b in zip(ends[0][0], ends[1][0]))  # bit for bit
    loop_state = ends[0][1].state_dict()  # a checkpoint of the loop form (older runs)
    resumed = adam([torch.nn.Parameter(t.clone()) for t in start], 1e-3)
    load_optimizer(resumed, loop_state)
    assert resumed.param_groups[0]["foreach"] is True


def test_fused_adam_is_the_multi_tensor_forms_maths_deterministic_and_resumes_either_way():
    """``adam(fused=True)``: torch's fused kernel, the multi-tensor form's numbers up to rounding over
    many steps, the same numbers on every run, and a checkpoint (saved and loaded as runs do) of either
    form resumes in either, also where the conv weight's memory layout changed (``perf.channels_last``):
    each run keeps its own kernel, the moments and step counts carry over."""
    import io
    from itertools import product

    from agent.agents.update import adam, load_optimizer

    torch.manual_seed(0)
    start = [torch.randn(50, 7), torch.randn(7), torch.randn(8, 4, 3, 3)]  # the last as a conv weight
    grads = [[torch.randn_like(t) for t in start] for _ in range(20)]

    def params(channels_last: bool, values=start) -> list:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return [torch.nn.Parameter(t.detach().clone(memory_format=layout) if t.dim() == 4 else t.detach().clone()) for t in values]

    def run(opt, steps: list) -> list:
        ps = opt.param_groups[0]["params"]
        for g in steps:
            for p, gg in zip(ps, g):
                p.grad = torch.empty_like(p).copy_(gg)  # a gradient takes its parameter's layout
            opt.step()
        return ps

    foreach = run(adam(params(False), 1e-2), grads)
    fused = run(adam(params(False), 1e-2, fused=True), grads)
    assert not any(torch.equal(a, t) for a, t in zip(fused, start))  # the steps moved every tensor
    for a, b in zip(fused, foreach):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(fused, run(adam(params(False), 1e-2, fused=True), grads)))  # deterministic
    for saved, other, (was_cl, now_cl) in product((False, True), (False, True), ((False, False), (False, True), (True, False))):
        opt = adam(params(was_cl), 1e-2, fused=saved)
        half = run(opt, grads[:10])
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        resumed = adam(params(now_cl, half), 1e-2, fused=other)
        load_optimizer(resumed, torch.load(buf, map_location="cpu", weights_only=True))  # as a checkpoint loads
        group = resumed.param_groups[0]
        assert bool(group["fused"]) is other and bool(group["foreach"]) is not other  # its own kernel, not the saved one
        ended = run(resumed, grads[10:])
        for a, b in zip(ended, foreach):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"saved fused={saved}, resumed fused={other}, channels_last {was_cl} -> {now_cl}")


def test_eval_planning_leaves_the_training_planner_alone():
    agent = make_agent()
    obs = torch.randn(2, *OBS)
    agent.act(obs, eval_mode=False)
    warm = agent.planner._prev_mean.clone()
    agent.act(obs, eval_mode=True)
    assert torch.equal(agent.planner._prev_mean, warm)


def test_nan_loss_is_refused_before_the_step():
    agent = make_agent()
    data = batch()
    data["reward"] = data["reward"] * float("nan")
    before = [p.clone() for p in agent.parameters()]
    with pytest.raises(Exception, match="non-finite world-model loss"):
        agent.update(data)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters()))


def test_bad_loss_scales_raise():
    with pytest.raises(ValueError, match="loss_scales must have exactly the keys"):
        TDMPCConfig(loss_scales={"dyn": 1.0})
