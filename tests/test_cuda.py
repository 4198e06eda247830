"""The same code on CUDA (skipped without a GPU): training runs there and its checkpoint loads on the CPU."""

from __future__ import annotations

import pytest
import torch

from agent.analysis.monitor import monitoring_set
from agent.api import load
from agent.run.representation import Trainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("aux", ["reward", "random"])
def test_train_on_cuda_and_load_on_cpu(tiny_cfg, tmp_path, aux):
    trainer = Trainer(tiny_cfg("device=cuda", f"aux={aux}"), tmp_path)
    assert trainer.agent.device.type == "cuda"
    metrics = trainer.run()
    assert metrics["heldout_centroid_acc"] is not None
    pixels, _ = monitoring_set(n=8)
    # cuDNN convs default to TF32 (10-bit mantissa, ~1e-3 relative): compare the checkpoint in true fp32
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        on_gpu = load(tmp_path, device="cuda").encode(pixels)
    on_cpu = load(tmp_path, device="cpu").encode(pixels)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4)


def test_asking_for_cuda_without_it_fails_clearly(tiny_cfg, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="device=cuda was asked for"):
        Trainer(tiny_cfg("device=cuda"), tmp_path)
    with pytest.raises(RuntimeError, match="data.device=cuda was asked for"):
        Trainer(tiny_cfg("data.device=cuda"), tmp_path)
    assert not any(tmp_path.iterdir())


@cuda
def test_data_on_the_device_learns_as_on_the_cpu(tiny_cfg, tmp_path):
    """``data.device=cuda``: the counting env renders on the GPU and the buffer stores there. The env's
    frames equal the CPU's; the run (fp32, TF32 off) ends where the CPU-data run on the GPU does."""
    from envs.counting import CountingEnv

    a, b = CountingEnv(batch_size=(16,), seed=0, device="cuda"), CountingEnv(batch_size=(16,), seed=0)
    assert a.renderer == "torch" and torch.equal(a.reset()["pixels"].cpu(), b.reset()["pixels"])
    fp32 = ("device=cuda", "perf.precision=fp32", "perf.channels_last=false", "analysis.every=0")
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        on_device = Trainer(tiny_cfg(*fp32, "data.device=cuda"), tmp_path / "a")
        assert on_device.buffer.storage_device.type == "cuda"
        first = on_device.run()
        assert on_device.buffer.stored().device.type == "cuda"
        second = Trainer(tiny_cfg(*fp32), tmp_path / "b").run()
    assert first == pytest.approx(second, rel=1e-4, abs=1e-5)


@cuda
@pytest.mark.parametrize("fused", [(False, False), (False, True), (True, False)])
def test_cuda_run_resumes(tiny_cfg, tmp_path, fused):
    """A CUDA run resumes, also with the other Adam kernel (the fused one needs its step counts on the GPU)."""
    Trainer(tiny_cfg("device=cuda", "steps=6", "analysis.every=0", f"perf.fused_adam={fused[0]}"), tmp_path).run()
    trainer = Trainer(tiny_cfg("device=cuda", "steps=12", "analysis.every=0", f"perf.fused_adam={fused[1]}"), tmp_path)
    assert trainer.step == 6
    steps = [s["step"] for s in trainer.agent.optim.state.values()]
    assert steps and all(s.device.type == ("cuda" if fused[1] else "cpu") for s in steps)
    trainer.run()


@cuda
def test_online_agent_plans_on_cuda(tmp_path):
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    out = OnlineTrainer(online_cfg("task=counting", "aux=reward", "agent.horizon=1", "device=cuda"), tmp_path).run()
    assert out["episodes"] == 2 and 0 <= out["success_rate"] <= 1


ONLINE_CUDA = ("agent=tdmpc2", "task=dmc/walker-walk", "aux=none", "model=small", "perf.precision=fp32", "device=cuda")


def _walker_batch(g: torch.Generator, H: int = 3, B: int = 64) -> dict[str, torch.Tensor]:
    """A time-major training batch on the GPU with walker-walk's shapes (obs 24, action 6), drawn from ``g``."""
    return {
        "obs": torch.randn(H + 1, B, 24, generator=g, device="cuda"), "action": torch.rand(H, B, 6, generator=g, device="cuda") * 2 - 1,
        "reward": torch.rand(H, B, 1, generator=g, device="cuda"), "terminated": torch.zeros(H, B, 1, device="cuda"),
    }  # fmt: skip


@cuda
def test_fused_adam_on_cuda_steps_as_the_multi_tensor_form():
    """``perf.fused_adam`` on a GPU: torch's CUDA fused kernel, two updates' weights as the foreach form's."""
    from agent.agents.factory import build_tdmpc_agent
    from tests.conftest import compose_cfg

    torch.manual_seed(0)
    base = build_tdmpc_agent(compose_cfg(*ONLINE_CUDA, "perf.fused_adam=false"), (24,), 6, "cuda")
    fast = build_tdmpc_agent(compose_cfg(*ONLINE_CUDA, "perf.fused_adam=true"), (24,), 6, "cuda")
    fast.load_state_dict(base.state_dict())
    assert fast.optim.defaults["fused"] and fast.pi_optim.defaults["fused"] and not base.optim.defaults["fused"]
    batch = _walker_batch(torch.Generator(device="cuda").manual_seed(1))
    for step in range(2):
        for agent in (base, fast):
            torch.manual_seed(5 + step)
            agent.update(batch)
    for name, p in base.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[name], p, rtol=1e-4, atol=1e-5)


@cuda
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_tdmpc_agent_on_cuda_updates_and_plans_as_eager(mode):
    """``perf.compile`` on a GPU, with CUDA graphs too (``reduce-overhead``): two updates give the eager
    CUDA agent's losses, and the compiled planner iteration its values for the same draws."""
    from agent.agents.factory import build_tdmpc_agent
    from tests.conftest import compose_cfg

    torch.manual_seed(0)
    base = build_tdmpc_agent(compose_cfg(*ONLINE_CUDA), (24,), 6, "cuda")
    fast = build_tdmpc_agent(compose_cfg(*ONLINE_CUDA, "perf.compile=true", f"perf.compile_mode={mode}"), (24,), 6, "cuda")
    fast.load_state_dict(base.state_dict())
    g = torch.Generator(device="cuda").manual_seed(1)
    batch = _walker_batch(g)
    for step in range(2):  # the second update replays the recorded graphs under reduce-overhead
        want, got = [(torch.manual_seed(5 + step), agent.update(batch))[1] for agent in (base, fast)]
        for k in ("loss/dyn", "loss/reward", "loss/value", "loss/pi"):
            torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-3, atol=1e-5)
    z = base.model.encode(batch["obs"][0, :4]).detach()
    actions = torch.rand(3, 4, 512, 6, generator=g, device="cuda") * 2 - 1
    draws = (torch.zeros(3, 4, 6, device="cuda"), torch.ones(3, 4, 6, device="cuda"), actions[:, :, 24:],
             torch.randn(4, 512, 6, generator=g, device="cuda"), torch.tensor([0, 1], device="cuda"))  # fmt: skip
    values = []
    for agent in (base, fast):
        agent.eval()
        with torch.no_grad():
            for _ in range(2):  # recorded, then replayed
                refit = agent.planner._iterate(agent.planner, z[:, None].expand(4, 512, z.shape[-1]), actions[:, :, :24], *draws)
            values.append(refit.value.float().clone())
    torch.testing.assert_close(values[1], values[0], rtol=1e-3, atol=1e-4)
    assert fast.act(batch["obs"][0, :2]).shape == (2, 6) and fast.act(batch["obs"][0, :2]).device.type == "cuda"


def _host_waits(fn) -> list[str]:
    """Where ``fn`` made the host wait for the GPU (torch's sync debug mode: ``.item()``, blocking copies,
    ``nonzero``, ...), as ``file:line: message``; the device is drained before and after."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "synchroniz" in str(w.message)]


@cuda
def test_collection_in_workers_never_waits_for_the_gpu(tiny_cfg, tmp_path):
    """``data.workers`` with the ring on the GPU: storing the workers' CPU batches only queues copies (through
    pinned memory), and the ring then holds what the in-process collection (the env rendering on the GPU) stores."""
    from agent.data.collection import TRAJ_KEY

    cfg = ("device=cuda", "data.device=cuda", "analysis.every=0")
    workers, local = Trainer(tiny_cfg(*cfg, "data.workers=2"), tmp_path / "w"), Trainer(tiny_cfg(*cfg), tmp_path / "l")
    try:
        workers.collect(128)  # the first two collects hand over the workers' two shared slots
        waits = _host_waits(lambda: workers.collect(128))
        assert not waits, "\n".join(waits)
        local.collect(256)
        a, b = workers.buffer.stored(), local.buffer.stored()
        assert a.device.type == "cuda" and len(a) == len(b) == 256
        for key in a.keys(include_nested=True, leaves_only=True):
            if key != TRAJ_KEY:
                assert torch.equal(a[key], b[key]), key
    finally:
        workers.collection.shutdown()
        local.collection.shutdown()


@cuda
def test_a_frames_once_ring_on_the_gpu_holds_and_samples_what_the_cpu_one_does():
    """``obs_once`` with the ring on the GPU and the collector's CPU batches (the workers' path): the tails'
    store, its growth and the batches' in-place gathers give what storing both on the CPU gives."""
    from agent.data.buffer import ReplayBuffer
    from agent.data.collection import TRAJ_KEY, RepeatedRandomPolicy, make_collector
    from agent.data.tails import TailStore
    from envs.counting import CountingEnv
    from tests.conftest import same_batches

    env = CountingEnv(batch_size=(8,), seed=4, reward_type="dense")
    collector = iter(make_collector(env, RepeatedRandomPolicy(env.action_spec.space.low, env.action_spec.space.high, 3, seed=4), 48))
    cpu, gpu = (
        ReplayBuffer(200, 2, 64, TRAJ_KEY, obs_keys=("obs_reward", "count"), obs_once=o, storage_device=d)
        for o, d in ((False, "cpu"), (True, "cuda"))
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TailStore, "LEAST", 1)
        for k in range(8):
            batch = next(collector)
            cpu.extend(batch)
            gpu.extend(batch)
            if k >= 2:
                assert same_batches(cpu, gpu, seed=k)
    assert (cpu.stored() == gpu.stored().cpu()).all() and gpu.tails < len(gpu)


@cuda
def test_a_frame_per_transition_ring_on_the_gpu_samples_what_the_cpu_one_does():
    """``frame_stack``: a ring of newest frames on the GPU, written env-major, then more than a lap at once, then
    a step at a time past a lap (a trajectory cut), rebuilds the stacks and draws the batches the CPU one does."""
    from agent.data.buffer import ReplayBuffer
    from tests.conftest import same_batches
    from tests.test_frames import stacked_stream

    data = stacked_stream(150, 3, first=60)
    cpu, gpu = (
        ReplayBuffer(40, 2, 64, "episode", obs_keys=("count",), step_keys=("reward",), obs_once=True, frame_stack=3, storage_device=d)
        for d in ("cpu", "cuda")
    )  # fmt: skip
    for part in (data[:48].reshape(4, 12), data[48:100]):  # the newest frames of stacks: views with strides
        cpu.extend(part)
        gpu.extend(part)
        assert same_batches(cpu, gpu, seed=len(part))
    for t in range(100, 150):
        cpu.extend(data[t])
        gpu.extend(data[t])
        if any(cpu.segments.length >= 2):
            assert same_batches(cpu, gpu, seed=t)
    assert (cpu.stored() == gpu.stored().cpu()).all() and gpu._leaves["pixels"].is_cuda


@cuda
@pytest.mark.parametrize("fused", [False, True])
def test_representation_updates_never_wait_for_the_gpu(tiny_cfg, tmp_path, fused):
    """With the data on the device, sampling a batch and the update (the probe's step included) only queue
    work: a non-finite step is recorded on the device (``FiniteWatch``), the slice indices go through pinned memory."""
    trainer = Trainer(tiny_cfg("device=cuda", "data.device=cuda", "analysis.every=0", f"perf.fused_adam={fused}"), tmp_path)
    trainer.collect(400)
    for _ in range(2):  # the optimisers' state is made at the first steps
        trainer.agent.update(trainer.sample(), train_probe=True)
    waits = _host_waits(lambda: [trainer.agent.update(trainer.sample(), train_probe=True) for _ in range(3)])
    assert not waits, "\n".join(waits)
    trainer.agent.finite.raise_if_bad()


@cuda
@pytest.mark.parametrize("fused", [False, True])
def test_online_updates_and_plans_never_wait_for_the_gpu(tmp_path, fused):
    """The TD-MPC2 agent's update (both optimisers, the Q scale, the Polyak step) and its plan queue work only
    (the env needs the action on the host: that copy is the one wait of an env step)."""
    from agent.run.online import OnlineTrainer
    from tests.test_online import online_cfg

    task = ("task=gym/Pendulum-v1", "aux=none", "task.episode_length=20", "agent.total_steps=50", "agent.eval_every=50")
    trainer = OnlineTrainer(online_cfg(*task, "device=cuda", "data.device=cuda", f"perf.fused_adam={fused}"), tmp_path)
    trainer.run()
    obs = trainer.buffer.stored()["observation"][-1:].cpu()
    waits = _host_waits(lambda: [trainer.agent.update(trainer.buffer.sample()) for _ in range(3)])
    waits += _host_waits(lambda: [trainer.agent.act(obs) for _ in range(2)])
    assert not waits, "\n".join(waits)
    trainer.agent.finite.raise_if_bad()


@cuda
def test_compiled_representation_agent_under_cuda_graphs_updates_as_eager_without_host_waits(tiny_cfg, tmp_path):
    """``perf.compile=true perf.compile_mode=reduce-overhead`` (the GPU session's representation run): the
    losses' and the probe's graphs give the eager agent's losses over three updates (recorded, then replayed),
    and further updates queue work only."""
    from agent.agents.factory import build_agent

    fp32 = ("device=cuda", "perf.precision=fp32", "perf.channels_last=false", "model.shift_pad=0", "perf.fused_adam=true")
    trainer = Trainer(tiny_cfg(*fp32, "data.device=cuda", "analysis.every=0"), tmp_path)
    trainer.collect(400)
    base = trainer.agent
    fast = build_agent(tiny_cfg(*fp32, "perf.compile=true", "perf.compile_mode=reduce-overhead"), base.wm.obs_shape, base.wm.action_dim, "cuda")
    fast.load_state_dict(base.state_dict())
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        for _ in range(3):
            batch = trainer.sample()
            want, got = base.update(batch), fast.update(batch)
            for k in want:
                torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-3, atol=1e-5)
    waits = _host_waits(lambda: [fast.update(trainer.sample(), train_probe=True) for _ in range(3)])
    assert not waits, "\n".join(waits)
    fast.finite.raise_if_bad()
