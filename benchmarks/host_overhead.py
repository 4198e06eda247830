"""The host's side of an update, which a GPU cannot hide: each job's update at tiny shapes, where the maths costs
little and the time is Python's, the dispatcher's and the optimisers' loops.

    python benchmarks/host_overhead.py [--batch-size 4] [--iters 50] [--rounds 3] [--overrides perf.compile=true ...]

Rows, in one process, alternating round by round (the first is the baseline):

- ``walks``: every mode switch walks its module (``nn.Module.train``), as each update did before ``eval_mode``
  and ``ModeSwitch`` (the probe's latents walk the encoder; the code before walked the whole agent twice there);
  a non-finite check reads its value back at once (the CPU's way; on a GPU each read waits for the device).
- ``cpu``: the code as a CPU runs it: a switch only where the mode changes, the agent's without a walk; checks at once.
- ``gpu``: the code as a GPU runs it: each optimiser step's check recorded on the device (``FiniteWatch``
  deferred): what that record costs the host (its reads, where the run's state leaves it, are not timed).

Each row prints ms per call (representation: an update with its batch's sampling, the decoder probe's step
every 4th, as the job; online: the world model's and the policy's steps and the Polyak step; online plan: one
MPPI action, the job's planner), then, approximately, the kernels a GPU would launch per call outside compiled
graphs (:func:`host_ops`; the representation update without its sampling, whose slice arithmetic stays on the
host in a GPU job too) and the compiled-graph calls.
``--overrides perf.compile=true``: both agents compiled (on a GPU with CUDA graphs each graph call is one replay;
what stays eager is what a GPU's host still launches op by op); ``perf.fused_adam=true``: Adam's fused kernel.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import config, filled_buffer
from walker import walker_agent

import agent.agents.pjepa
from agent.agents.factory import build_agent
from agent.agents.finite import FiniteWatch
from agent.agents.update import ModeSwitch, eval_mode

ROWS = ("walks", "cpu", "gpu")
# ATen ops that launch no kernel themselves: views and metadata, allocations, conversions (their copy counts)
PASS = {
    f"aten::{op}" for op in ("detach", "detach_", "as_strided", "view", "alias", "_reshape_alias", "empty", "empty_strided",
                             "empty_like", "t", "transpose", "expand", "unsqueeze", "squeeze", "select", "slice", "permute",
                             "to", "_to_copy", "resize_", "reshape", "contiguous")
}  # fmt: skip
# ... and host work under them: Python scalars wrapped as CPU tensors, reads of CPU scalars (Adam's step counts)
HOST = {f"aten::{op}" for op in ("scalar_tensor", "lift_fresh", "_local_scalar_dense", "is_nonzero", "item")}


@contextmanager
def walked_eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``eval_mode`` as the code before it: a walk at each switch, whatever the mode."""
    was = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was)


@contextmanager
def row(name: str, agents: list) -> Iterator[None]:
    """The agents and their modules as row ``name`` runs them."""
    pjepa = agent.agents.pjepa  # the probe's latents switch the encoder with eval_mode
    pjepa.eval_mode = walked_eval_mode if name == "walks" else eval_mode
    for a in agents:
        a.finite = FiniteWatch(deferred=name == "gpu")
        a._modes = a.train if name == "walks" else ModeSwitch(a)
    try:
        yield
    finally:
        pjepa.eval_mode = eval_mode


def host_ops(fn: Callable[[], object]) -> tuple[int, int]:
    """Roughly what ``fn`` would launch on a GPU, from a CPU profile: ATen ops outside compiled graphs that do
    device work and call no other such op (each a kernel launch; a multi-tensor ``_foreach_`` op counted once,
    as it launches once on a GPU; a conversion of a wrapped scalar counts, where a GPU would convert on the
    host), and calls of compiled graphs (forward or backward: one CUDA-graph replay each under
    ``perf.compile_mode=reduce-overhead``)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = graphs = 0
    todo = [e for e in prof.events() if e.cpu_parent is None]
    while todo:
        e = todo.pop()
        if e.name.startswith(("Torch-Compiled Region", "CompiledFunction")):
            graphs += 1
        elif e.name.startswith("aten::_foreach_"):
            ops += 1
        elif e.name not in HOST:
            kids = [c for c in e.cpu_children if c.name.startswith("aten::") and c.name not in HOST]
            if e.name.startswith("aten::") and e.name not in PASS and all(c.name in PASS and not c.cpu_children for c in kids):
                ops += 1  # device work with at most allocations and views under it
            else:
                todo += e.cpu_children
    return ops, graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="settings of both agents, e.g. perf.compile=true perf.fused_adam=true")
    args = parser.parse_args()
    extra = tuple(args.overrides)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny model, batch {args.batch_size}; {' '.join(extra) or 'eager'}")
    torch.manual_seed(0)
    cfg = config(" ".join(("tiny", *extra)), args.batch_size, "cpu")
    buffer = filled_buffer(cfg, 4096)
    rep = build_agent(cfg, (3, 64, 64), 1)
    online = walker_agent("tiny", overrides=extra)
    b = args.batch_size  # walker-walk's shapes, horizon 3
    batch = {"obs": torch.randn(4, b, 24), "action": torch.rand(3, b, 6) * 2 - 1, "reward": torch.rand(3, b, 1), "terminated": torch.zeros(3, b, 1)}
    count, drawn = [0], buffer.sample()

    def rep_update(sample: bool = True) -> None:
        rep.update(buffer.sample() if sample else drawn, train_probe=count[0] % 4 == 0)
        count[0] += 1

    def online_update() -> None:
        online.update(batch)

    def plan() -> None:
        online.act(batch["obs"][0, :1])

    # each job: its agent, the timed call, the counted call (the update alone: a GPU job's batch indices are drawn on the host)
    jobs = {"representation": (rep, rep_update, lambda: rep_update(sample=False)), "online": (online, online_update, online_update), "online plan": (online, plan, plan)}
    times: dict[tuple[str, str], list[float]] = {}
    ops: dict[tuple[str, str], tuple[float, float]] = {}
    for r in range(args.rounds):
        for name in ROWS:
            for job, (agent_, fn, counted) in jobs.items():
                with row(name, [agent_]):
                    for _ in range(3):
                        fn()
                    t0 = time.perf_counter()
                    for _ in range(args.iters):
                        fn()
                    times.setdefault((job, name), []).append((time.perf_counter() - t0) / args.iters * 1e3)
                    if r == 0:  # over 4 updates: one with the probe's step
                        counts = [host_ops(counted) for _ in range(4)]
                        ops[(job, name)] = tuple(sum(c) / 4 for c in zip(*counts))
    print(f"{'job':>15} {'row':>6} {'ms per update, each round':>28} {'mean':>7} {'x walks':>8} {'ops':>6} {'graphs':>7}")
    for job in jobs:
        base = sum(times[(job, "walks")]) / args.rounds
        for name in ROWS:
            t = times[(job, name)]
            mean = sum(t) / len(t)
            print(f"{job:>15} {name:>6} {' '.join(f'{x:.2f}' for x in t):>28} {mean:>7.2f} {base / mean:>7.2f}x {ops[(job, name)][0]:>6.0f} {ops[(job, name)][1]:>7.1f}")


if __name__ == "__main__":
    main()
