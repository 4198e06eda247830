"""Fast paths (the representation update; the TD-MPC2 update and planner) are switches that match the fp32 eager path."""

from __future__ import annotations

import copy

import pytest
import torch

from agent.agents.factory import build_agent
from tests.conftest import compose_cfg, plain_dicts


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(2, 8, 3, 64, 64, dtype=torch.uint8)
    for i in range(8):  # a few bright squares on black, like counting frames
        for _ in range(i % 5):
            y, x = torch.randint(0, 56, (2,), generator=g).tolist()
            obs[:, i, :, y : y + 7, x : x + 7] = torch.randint(30, 226, (3, 1, 1), generator=g, dtype=torch.uint8)
    return {"obs": obs, "action": torch.rand(1, 8, 1, generator=g) * 2 - 1, "obs_reward": torch.rand(2, 8, 1, generator=g)}


FP32 = ("model=small", "model.pixel_encoder=pooled", "model.shift_pad=0", "perf.precision=fp32", "perf.channels_last=false")


def _agents(*overrides: str):
    """The fp32 eager agent and one with ``overrides``, with the same weights."""
    torch.manual_seed(0)
    base = build_agent(compose_cfg(*FP32), (3, 64, 64), 1)
    torch.manual_seed(0)
    fast = build_agent(compose_cfg(*FP32, *overrides), (3, 64, 64), 1)
    fast.load_state_dict(base.state_dict())
    return base, fast


@pytest.mark.parametrize(
    "overrides, rtol",
    [
        (("perf.channels_last=true",), 1e-4), (("perf.precision=bf16",), 0.05), (("perf.precision=bf16", "perf.channels_last=true"), 0.05),
        (("perf.fused_adam=true",), 1e-5),
        pytest.param(("perf.compile=true",), 1e-4, marks=pytest.mark.slow),  # compiles forward and backward (~40 s)
        pytest.param(("perf.compile=true", "perf.precision=bf16", "perf.channels_last=true"), 0.05, marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_fast_paths_match_fp32_losses_and_updates(overrides, rtol):
    base, fast = _agents(*overrides)
    batch = _batch()
    with fast.autocast():
        got, _ = fast.loss_fn(batch)  # the loss function the update runs (compiled when asked)
    want, _ = base.losses(batch)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k], rtol=rtol, atol=1e-6)
    # one update each: the parameters move the same way (cosine of the steps close to 1)
    before = copy.deepcopy(base.state_dict())
    want_probe = base.update(batch)["loss/probe"]
    got_probe = fast.update(batch)["loss/probe"]  # the probe's step too (compiled when asked)
    torch.testing.assert_close(got_probe.float(), want_probe, rtol=rtol, atol=1e-6)
    for name, p0 in before.items():
        if p0.is_floating_point() and p0.numel() > 100:
            d_base, d_fast = (base.state_dict()[name] - p0).flatten(), (fast.state_dict()[name] - p0).flatten()
            if d_base.norm() > 0:
                assert torch.nn.functional.cosine_similarity(d_base, d_fast, dim=0) > 0.9, name
    _fused_adam_took_effect(base, fast, "perf.fused_adam=true" in overrides, [fast.optim, fast.probe_optim])


def _fused_adam_took_effect(base, fast, fused: bool, optims: list) -> None:
    """The switch reached every optimiser; fused, the step moved the weights as the multi-tensor form's did."""
    assert all(bool(o.defaults["fused"]) is fused for o in optims)
    if fused:
        for name, p in base.state_dict().items():
            torch.testing.assert_close(fast.state_dict()[name], p, rtol=1e-5, atol=1e-6)


def test_channels_last_weights_and_fp32_state():
    _, fast = _agents("perf.channels_last=true", "perf.precision=bf16")
    conv = fast.wm.encoder[0].convs[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32
    fast.update(_batch())
    assert all(s["exp_avg"].dtype == torch.float32 for s in fast.optim.state.values())


def test_unknown_precision_fails_clearly():
    from agent.agents.pjepa import UpdateConfig
    from agent.agents.tdmpc import TDMPCConfig

    with pytest.raises(ValueError, match="perf.precision='fp16': must be one of 'fp32', 'bf16'"):
        build_agent(compose_cfg("perf.precision=fp16"), (3, 64, 64), 1)
    for cls in (UpdateConfig, TDMPCConfig):  # the agents' own configs check it too
        with pytest.raises(ValueError, match="unknown precision 'fp16'"):
            cls(precision="fp16")


def test_torch_renderer_and_explicit_data_device_run_as_the_default(tiny_cfg, tmp_path):
    """``task.renderer=torch`` (the GPU path of the counting env, here on the CPU) and ``data.device=cpu``
    are drop-ins: the run's numbers equal the default run's."""
    from agent.run.representation import Trainer

    base = Trainer(tiny_cfg("analysis.every=0", "steps=6"), tmp_path / "a").run()
    switched = Trainer(tiny_cfg("analysis.every=0", "steps=6", "task.renderer=torch", "data.device=cpu"), tmp_path / "b")
    assert switched.env.renderer == "torch"
    assert switched.run() == base
    assert (tmp_path / "a" / "metrics.csv").read_text().split("\n")[1].split(",")[:-1] == (
        (tmp_path / "b" / "metrics.csv").read_text().split("\n")[1].split(",")[:-1]
    )  # the first logged row, less updates/s


def test_mish_is_the_same_function_as_torchs():
    from agent.models.nets import mish

    x = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3])
    x0 = x.clone()
    want = torch.nn.functional.mish(x)
    fast = mish(x)  # no gradient: the sigmoid form, in place on its own buffers
    assert torch.equal(x, x0)  # ... never on its input
    assert not torch.equal(fast, want)  # (it is a different computation)
    torch.testing.assert_close(fast, want, rtol=1e-6, atol=1e-6)
    compiled = torch.compile(mish)  # the sigmoid form always, in fp32 inside, forward and backward
    xg, yg = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(xg).sum().backward()
    torch.nn.functional.mish(yg).sum().backward()
    torch.testing.assert_close(xg.grad, yg.grad, rtol=0, atol=1e-5)
    xb = x.bfloat16()  # bf16 in (as under autocast): one rounding, as torch's
    assert compiled(xb).dtype == torch.bfloat16
    torch.testing.assert_close(compiled(xb), torch.nn.functional.mish(xb), rtol=0.008, atol=1e-5)
    # eager with a gradient: the written-out backward, as close to fp64 as torch's own within 3e-6
    xg, yg, xd = x.clone().requires_grad_(), x.clone().requires_grad_(), x.double().requires_grad_()
    got, want, exact = mish(xg), torch.nn.functional.mish(yg), torch.nn.functional.mish(xd)
    assert type(got.grad_fn).__name__.startswith("_EagerMish") and torch.equal(got, fast)  # one forward, either path
    (got.sum() + want.sum() + exact.sum()).backward(retain_graph=True)
    torch.testing.assert_close(xg.grad, yg.grad, rtol=1e-6, atol=3e-6)
    torch.testing.assert_close(xg.grad.double(), xd.grad, rtol=0, atol=3e-6)
    first = xg.grad.clone()
    xg.grad = None
    got.sum().backward()  # the saved tensors are intact: a second backward gives the same gradient
    assert torch.equal(xg.grad, first) and torch.equal(x, x0)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(mish(xg).sum(), xg, create_graph=True)
    strided = x0[:20000].view(100, 200).t().requires_grad_()  # a non-contiguous input, upstream gradient too
    y = mish(strided)
    y.backward(torch.ones(1, 100).expand_as(y))
    torch.testing.assert_close(strided.grad, torch.func.grad(lambda v: torch.nn.functional.mish(v).sum())(strided.detach()), rtol=1e-6, atol=1e-6)
    assert mish(x.bfloat16()).equal(torch.nn.functional.mish(x.bfloat16()))  # bf16 in eager code: torch's own
    off_cpu = torch.empty(4, device="meta", requires_grad=True)  # off the CPU (a GPU): torch's one kernel
    assert type(mish(off_cpu).grad_fn).__name__ == "MishBackward0"


# Q dropout on (TD-MPC2's 0.01): compiled code draws the same masks as eager code, in the same order
ONLINE = ("agent=tdmpc2", "task=dmc/walker-walk", "aux=none", "model=small", "perf.precision=fp32", "perf.fused_adam=false")  # the baseline


def _online_agents(*overrides: str):
    """The fp32 eager TD-MPC2 agent (state obs 24, action 6) and one with ``overrides``, same weights."""
    from agent.agents.factory import build_tdmpc_agent

    torch.manual_seed(0)
    base = build_tdmpc_agent(compose_cfg(*ONLINE), (24,), 6)
    fast = build_tdmpc_agent(compose_cfg(*ONLINE, *overrides), (24,), 6)
    fast.load_state_dict(base.state_dict())
    return base, fast


@pytest.mark.parametrize(
    "overrides, rtol",
    [
        (("perf.precision=bf16",), 0.05),
        (("perf.fused_adam=true",), 1e-5),
        pytest.param(("perf.compile=true",), 1e-4, marks=pytest.mark.slow),  # compiles both losses and the rollout (~1 min)
    ],
)  # fmt: skip
def test_online_fast_paths_match_fp32_losses_and_plan_values(overrides, rtol):
    """The TD-MPC2 agent's switches: the update's losses and gradient step, and the planner's value
    estimates of the same action sequences, match the fp32 eager path."""
    from agent.agents.tdmpc import TDMPCAgent
    from agent.agents.update import autocast
    from planner.mppi import MPPI

    base, fast = _online_agents(*overrides)
    assert base.model.qs.drop.p > 0
    g = torch.Generator().manual_seed(1)
    H, B = 3, 64
    batch = {
        "obs": torch.randn(H + 1, B, 24, generator=g), "action": torch.rand(H, B, 6, generator=g) * 2 - 1,
        "reward": torch.rand(H, B, 1, generator=g), "terminated": torch.zeros(H, B, 1),
    }  # fmt: skip
    for agent in (base, fast):  # non-zero reward and Q heads (they start at zero), the same in both
        torch.manual_seed(2)
        for head in (agent.model.reward_head[-1], agent.model.qs.out):
            torch.nn.init.normal_(head.weight, std=0.05)
    z = base.model.encode(batch["obs"][0, :4]).detach()
    actions = torch.rand(3, 4, 512, 6, generator=g) * 2 - 1  # the first 24 as the policy prior's, the rest as samples
    draws = (torch.zeros(3, 4, 6), torch.ones(3, 4, 6), actions[:, :, 24:], torch.randn(4, 512, 6, generator=g), torch.tensor([0, 3]))
    values = []
    for agent in (base, fast):
        agent.eval()  # as act(): no Q dropout in planning
        with torch.no_grad(), autocast(agent.device, agent.cfg.precision):  # the iteration plan() runs (compiled when asked)
            values.append(agent.planner._iterate(agent.planner, z[:, None].expand(4, 512, z.shape[-1]), actions[:, :, :24], *draws).value.float())
    want_v, got_v = values
    if rtol < 1e-3:
        torch.testing.assert_close(got_v, want_v, rtol=rtol, atol=rtol)
    else:
        assert not torch.equal(got_v, want_v)  # bf16 took effect  # bf16 keeps ~3 significant digits through 3 steps and the Q heads: the planner needs the ranking
        corr = torch.corrcoef(torch.stack([want_v.flatten(), got_v.flatten()]))[0, 1]
        elites = [set(v.topk(64, dim=1).indices[i].tolist()) for v in (want_v, got_v) for i in range(4)]
        overlap = [len(elites[i] & elites[4 + i]) / 64 for i in range(4)]
        print(f"bf16 plan values: corr {corr:.5f}, elite overlap {overlap}, max |diff| {(got_v - want_v).abs().max():.4f}, std {want_v.std():.4f}")
        assert corr > 0.99 and min(overlap) >= 0.75
    before = copy.deepcopy(base.state_dict())
    want, got = [(torch.manual_seed(5), agent.update(batch))[1] for agent in (base, fast)]  # the same dropout, policy noise and Q pairs
    for k in ("loss/dyn", "loss/reward", "loss/value", "loss/pi"):
        torch.testing.assert_close(got[k].float(), want[k], rtol=rtol, atol=1e-5)
    for name, p0 in before.items():
        if p0.is_floating_point() and p0.numel() > 100:
            d_base, d_fast = (base.state_dict()[name] - p0).flatten(), (fast.state_dict()[name] - p0).flatten()
            if d_base.norm() > 0:
                assert torch.nn.functional.cosine_similarity(d_base, d_fast, dim=0) > 0.9, name
    assert all(s["exp_avg"].dtype == torch.float32 for s in fast.optim.state.values())
    _fused_adam_took_effect(base, fast, "perf.fused_adam=true" in overrides, [fast.optim, fast.pi_optim])
    losses = [fast._wm_losses is not TDMPCAgent.wm_losses, fast._pi_loss is not TDMPCAgent.pi_loss]  # compiled: wrappers
    assert all(losses) == fast.cfg.compile and base._wm_losses is TDMPCAgent.wm_losses and base._pi_loss is TDMPCAgent.pi_loss
    planners = [(p._iterate is not MPPI.iterate, p._policy_actions is not MPPI.policy_actions) for p in (fast.planner, fast.eval_planner)]
    assert all(sum(planners, ())) == fast.cfg.compile  # compiled: wrappers
    assert (base.planner._iterate, base.planner._policy_actions) == (MPPI.iterate, MPPI.policy_actions)
    assert fast.act(batch["obs"][0, :2]).shape == (2, 6)  # planning runs end to end on the switch


def test_a_deep_copy_of_a_compiled_agent_trains_and_plans_itself(monkeypatch, compile_builds):
    """The compiled losses and value rollout are stored unbound and called with the agent (planner), so a
    deep copy runs them on its own weights. ``torch.compile`` is replaced by a wrapper of what it is given
    (what it returns: a new function around it), so no compiling is needed to check the wiring."""
    from agent.agents.factory import build_tdmpc_agent

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: lambda *a, **k: fn(*a, **k))
    torch.manual_seed(0)
    original = build_tdmpc_agent(compose_cfg(*ONLINE, "perf.compile=true"), (24,), 6)
    twin = copy.deepcopy(original)
    before = copy.deepcopy(original.state_dict())
    batch = {"obs": torch.randn(4, 8, 24), "action": torch.rand(3, 8, 6) * 2 - 1, "reward": torch.rand(3, 8, 1), "terminated": torch.zeros(3, 8, 1)}
    twin.update(batch)
    twin.act(batch["obs"][0, :2])
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in before.items())  # the original untouched
    assert not torch.equal(twin.model.policy.net[0].weight, before["model.policy.net.0.weight"])
    assert twin.planner._gen is not None and original.planner._gen is None  # the rollout ran on the copy's planner
    rep = _agents("perf.compile=true")[1]  # the representation agent's compiled loss, the same way
    rep_twin = copy.deepcopy(rep)
    with torch.no_grad():
        for p in rep_twin.wm.parameters():
            p.mul_(0.5)
    batch = _batch()
    got, want, other = rep_twin.loss_fn(batch)[0], rep_twin.losses(batch)[0], rep.losses(batch)[0]
    assert all(torch.equal(got[k], want[k]) for k in want) and not torch.equal(got["dyn"], other["dyn"])
    obs = batch["obs"][0]
    assert rep_twin._compiled_probe is not None  # compiled: a wrapper, called with the copy
    assert torch.equal(rep_twin.probe_fn(obs), rep_twin.probe_loss(obs)) and not torch.equal(rep_twin.probe_fn(obs), rep.probe_loss(obs))


def _cpu_bf16(monkeypatch, native: bool) -> None:
    """Make the CPU look as if it had (or lacked) native bf16 (avx512_bf16 / AMX)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_exactly_where_it_is_native(native, monkeypatch):
    """``perf.precision=auto`` is bf16 on a device with native bf16 and fp32 elsewhere (where emulated
    bf16 ran an order of magnitude slower than fp32, docs/benchmarks.md): the same losses, bit for bit, as that precision."""
    from agent.agents.update import autocast, native_bf16, resolve_precision

    _cpu_bf16(monkeypatch, native)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) == native
    want = "bf16" if native else "fp32"
    assert resolve_precision("auto", cpu) == want and resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with autocast(cpu, "auto"):
        assert torch.is_autocast_enabled("cpu") == native
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", cpu)
    _, auto = _online_agents("perf.precision=auto")
    _, same = _online_agents(f"perf.precision={want}")
    assert auto.cfg.precision == want  # the factory resolved it once: hot code never re-probes the device
    batch = {"obs": torch.randn(4, 8, 24), "action": torch.rand(3, 8, 6) * 2 - 1, "reward": torch.rand(3, 8, 1), "terminated": torch.zeros(3, 8, 1)}
    got, ref = [(torch.manual_seed(5), agent.update(batch))[1] for agent in (auto, same)]
    for k in ("loss/dyn", "loss/reward", "loss/value", "loss/pi"):
        assert torch.equal(got[k], ref[k]), k
    # the representation job (the counting recipe's default is auto) resolves it the same way
    _, rep_auto = _agents("perf.precision=auto")
    _, rep_same = _agents(f"perf.precision={want}")
    assert rep_auto.cfg.precision == want
    batch = _batch()
    with rep_auto.autocast():
        got, _ = rep_auto.losses(batch)
    with rep_same.autocast():
        ref, _ = rep_same.losses(batch)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def test_native_bf16_on_cuda_reads_the_given_gpu_and_other_devices_count_as_emulated(monkeypatch):
    """Ampere (compute capability 8) or newer has native bf16, of the GPU asked about; unknown device types do not."""
    from agent.agents.update import native_bf16, resolve_precision

    asked = []
    capability = {0: (7, 5), 1: (8, 0)}  # a Turing and an Ampere GPU in one machine
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (asked.append(d), capability[d.index])[1])
    assert not native_bf16(torch.device("cuda:0")) and native_bf16(torch.device("cuda:1"))
    assert [d.index for d in asked] == [0, 1]
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp32" and resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert not native_bf16(torch.device("meta"))


def test_resume_on_a_device_where_auto_picks_another_precision_warns(monkeypatch, caplog, tmp_path):
    """A checkpoint records the precision its run computed in; ``auto`` resumed on a machine where it
    resolves otherwise (bf16 -> fp32) says so, since the config alone is the same."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    cfg = online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", "perf.precision=auto")
    _cpu_bf16(monkeypatch, True)
    first = OnlineTrainer(cfg, tmp_path)
    assert first.precision == "bf16"
    first.save()
    for native, warned in ((True, False), (False, True)):
        _cpu_bf16(monkeypatch, native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent.run.skeleton"):
            OnlineTrainer(cfg, tmp_path)
        assert ("the checkpoint trained in bf16; this run goes on in fp32" in caplog.text) == warned


def test_resume_with_the_other_adam_kernel_warns(caplog, tmp_path):
    """``perf.fused_adam`` changed at resume is named (the config records it), and so is a fused resume of
    a checkpoint from before the switch existed (whose runs all stepped the multi-tensor form)."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    plain = online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", "perf.fused_adam=false")
    fused = online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", "perf.fused_adam=true")
    first = OnlineTrainer(plain, tmp_path)
    first.save()
    for cfg, said in ((plain, None), (fused, "perf.fused_adam: False -> True")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent.run.skeleton"):
            resumed = OnlineTrainer(cfg, tmp_path)
        assert resumed.step == first.step and ("perf.fused_adam" in caplog.text) == (said is not None)
        assert said is None or said in caplog.text
    older = plain_dicts(first.checkpointer.latest())  # as a checkpoint from before perf.fused_adam: no such key
    older["config"] = {**older["config"], "perf": {k: v for k, v in older["config"]["perf"].items() if k != "fused_adam"}}
    first.checkpointer.save(first.step + 1, older)
    for cfg, warned in ((plain, False), (fused, True)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent.run.skeleton"):
            OnlineTrainer(cfg, tmp_path)
        assert ("stepped with Adam's multi-tensor form; this run goes on with its fused kernel" in caplog.text) == warned


@pytest.mark.parametrize("precision", ["bf16", "fp32", "auto"])
def test_bf16_on_a_device_without_native_bf16_warns(precision, monkeypatch, caplog, tmp_path):
    """bf16 autocast is emulated (and can be far slower than fp32) where the CPU lacks avx512_bf16 and AMX:
    a run that asks for it there says so at the start; fp32 runs say nothing; auto says it chose fp32."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    _cpu_bf16(monkeypatch, False)
    with caplog.at_level("INFO", logger="agent.run.skeleton"):
        OnlineTrainer(online_cfg("task=gym/Pendulum-v1", "task.episode_length=20", f"perf.precision={precision}"), tmp_path)
    assert ("no native bf16" in caplog.text) == (precision == "bf16")
    assert ("perf.precision=auto: fp32 on cpu" in caplog.text) == (precision == "auto")
