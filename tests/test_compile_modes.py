"""``perf.compile_mode``: the mode reaches ``torch.compile``, and under CUDA graphs nothing a caller holds
is read after the graphs' memory pool was reused. No compiling: ``torch.compile`` is replaced by stand-ins
(and the probe of ``perf.compile=true`` says it builds)."""

from __future__ import annotations

import pytest
import torch

from agent.agents.compiled import COMPILE_MODES, compiled, uses_cuda_graphs
from agent.agents.factory import build_tdmpc_agent
from agent.agents.update import NonFiniteLossError
from tests.conftest import compose_cfg
from tests.test_perf_switches import ONLINE, _agents, _batch

pytestmark = pytest.mark.usefixtures("compile_builds")


class GraphPool:
    """A stand-in ``torch.compile`` that behaves as CUDA-graph trees do with outputs: every call of any
    function it compiled begins a new step and overwrites (with NaN) the floating-point tensors that earlier
    calls returned, as a replay writes into the shared pool. It records what it was asked for."""

    def __init__(self) -> None:
        self.returned: list[torch.Tensor] = []
        self.asked: list[dict] = []
        self.calls = 0
        self.watched: list[torch.Tensor] = []  # parameters whose live gradients each call counts
        self.live_grads: list[tuple[str, int]] = []  # (function, gradients alive when it was called)

    def compile(self, fn, **kwargs):
        self.asked.append(kwargs)

        def replay(*args, **kw):
            self.calls += 1
            self.live_grads.append((fn.__name__, sum(p.grad is not None for p in self.watched)))
            for t in self.returned:
                t.detach().fill_(float("nan"))
            out = fn(*args, **kw)
            self.returned = [t for t in _tensors(out) if t.is_floating_point()]
            return out

        return replay


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    return []


def _online(*overrides: str):
    torch.manual_seed(0)
    return build_tdmpc_agent(compose_cfg(*ONLINE, *overrides), (24,), 6)


def _online_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(4, 8, 24, generator=g), "action": torch.rand(3, 8, 6, generator=g) * 2 - 1,
        "reward": torch.rand(3, 8, 1, generator=g), "terminated": torch.zeros(3, 8, 1),
    }  # fmt: skip


def test_modes_and_their_cuda_graphs():
    assert COMPILE_MODES[0] == "default" and not uses_cuda_graphs("default")
    assert uses_cuda_graphs("reduce-overhead") and uses_cuda_graphs("max-autotune")
    assert not uses_cuda_graphs("max-autotune-no-cudagraphs")
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        uses_cuda_graphs("fast")


def test_the_mode_reaches_torch_compile(monkeypatch):
    pool = GraphPool()
    monkeypatch.setattr(torch, "compile", pool.compile)
    agent = _online("perf.compile=true", "perf.compile_mode=reduce-overhead")
    assert agent.cfg.compile_mode == "reduce-overhead" and len(pool.asked) == 6  # two planners' iteration and prior rollout, two losses
    losses, rollouts = pool.asked[4:], pool.asked[:4]
    for kw in losses:  # the mode's options, and torch's generator for the random draws
        assert kw == {"dynamic": False, "options": {"triton.cudagraphs": True, "fallback_random": True}}
    assert all(kw == {"options": {"triton.cudagraphs": True}} for kw in rollouts)
    pool.asked.clear()
    rep = _agents("perf.compile=true", "perf.compile_mode=max-autotune-no-cudagraphs")[1]
    assert rep.cfg.compile_mode == "max-autotune-no-cudagraphs"
    assert pool.asked == [{"options": {"max_autotune": True, "coordinate_descent_tuning": True}}] * 2  # the loss and the probe's
    pool.asked.clear()
    _online("perf.compile=true")  # the default mode: inductor's defaults
    assert [kw["options"] for kw in pool.asked] == [{}] * 4 + [{"fallback_random": True}] * 2


def test_cuda_graph_outputs_are_cloned_before_the_pool_is_reused(monkeypatch):
    """With ``reduce-overhead`` two updates and a plan give the eager agent's numbers, and the first update's
    metrics survive the second, although each compiled call overwrites what the previous one returned.
    Without the clones (the same stand-in under the default mode) the policy loss reads an overwritten
    latent rollout, which the update reports as a non-finite loss: the stand-in does what it should."""
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    eager = _online()
    pool = GraphPool()
    monkeypatch.setattr(torch, "compile", pool.compile)
    graphs = _online("perf.compile=true", "perf.compile_mode=reduce-overhead")
    graphs.load_state_dict(eager.state_dict())
    # a backward under CUDA graphs writes the gradients into the graphs' memory too: the world model's must be
    # gone before the policy loss's step begins, or its backward would add the Q gradients into reused memory
    pool.watched = [p for g in graphs.optim.param_groups for p in g["params"]]
    got, want = [], []
    for agent, out in ((eager, want), (graphs, got)):
        torch.manual_seed(5)
        out += [agent.update(_online_batch(1)), agent.update(_online_batch(2))]
        out.append(agent.act(_online_batch(3)["obs"][0, :2]))
    assert pool.calls == 2 * 2 + 1 + 6 and len(marks) == pool.calls  # a step begins at each call: 2 losses x 2, the prior, 6 iterations
    assert [n for name, n in pool.live_grads if name == "pi_loss"] == [0, 0]
    for g, w in zip(got[:2], want[:2]):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in w), {k: (g[k], w[k]) for k in w}
    assert torch.equal(got[2], want[2])
    unsafe = _online("perf.compile=true")
    with pytest.raises(NonFiniteLossError, match="non-finite policy loss"):
        unsafe.update(_online_batch(1))


def test_representation_metrics_survive_the_next_update(monkeypatch):
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    base = _agents()[0]
    pool = GraphPool()
    monkeypatch.setattr(torch, "compile", pool.compile)
    fast = _agents("perf.compile=true", "perf.compile_mode=reduce-overhead")[1]
    fast.load_state_dict(base.state_dict())
    runs = []
    for agent in (base, fast):
        torch.manual_seed(3)
        runs.append([agent.update(_batch(0)), agent.update(_batch(1))])
    for want, got in zip(*runs):
        assert all(torch.equal(got[k], want[k]) for k in want), {k: (got[k], want[k]) for k in want}


def test_compiled_clones_only_under_cuda_graphs(monkeypatch):
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    x = torch.ones(3)

    def fn(t):
        return t, {"a": [t]}

    same = compiled(fn, "default")(x)
    assert same[0] is x and same[1]["a"][0] is x
    out = compiled(fn, "reduce-overhead")(x)
    assert torch.equal(out[0], x) and out[0].data_ptr() != x.data_ptr() and out[1]["a"][0].data_ptr() != x.data_ptr()


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_every_mode_compiles_and_runs_on_a_cpu(mode):
    """The real ``torch.compile`` takes each mode's options (a CPU graph runs without CUDA graphs)."""
    torch._dynamo.reset()

    def fn(x, w):
        return {"y": torch.nn.functional.mish(x @ w).sum(0)}

    x, w = torch.randn(8, 16), torch.randn(16, 4, requires_grad=True)
    fast = compiled(fn, mode, dynamic=False)
    for _ in range(2):  # a second call replays
        got = fast(x, w)["y"]
        torch.testing.assert_close(got, fn(x, w)["y"], rtol=1e-5, atol=1e-6)
        (g,) = torch.autograd.grad(got.sum(), w)
        torch.testing.assert_close(g, torch.autograd.grad(fn(x, w)["y"].sum(), w)[0], rtol=1e-5, atol=1e-6)


def test_the_planner_compiles_each_function_as_one_graph():
    """All the planner's random numbers are drawn in eager code before its compiled functions run, so the
    policy prior's rollout and each MPPI iteration are one graph each (``fullgraph=True`` fails at any graph
    break; a graph break splits a CUDA graph too), and the plans are the eager planner's."""
    from functools import partial

    from planner.mppi import MPPI

    agent = _online().eval()
    graphs = MPPI(agent.model, agent.planner.cfg, seed=agent.planner.seed, compile=partial(torch.compile, backend="eager", fullgraph=True))
    with torch.no_grad():
        z = agent.model.encode(torch.randn(2, 24))
        for _ in range(2):  # the second plan starts warm
            assert torch.equal(graphs.plan(z), agent.planner.plan(z))
