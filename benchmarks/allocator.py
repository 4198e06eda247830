"""``malloc_reuse``: both jobs' CPU updates (and the TD-MPC2 plan) with glibc's own thresholds and with freed blocks reused.

The allocator setting is process-wide, so each row is measured in a child process of its own, the two
settings alternating over ``--rounds``; each child builds its agent, warms up and times ``--iters`` calls.
Prints ms per call, the minor page faults per call, the child's peak resident memory (over all its calls), the gain of
reuse over glibc's own thresholds for the same job, and for the representation rows the gain over the
fp32 path with glibc's thresholds (the path of issue 13's 2.15 updates/s).

    python benchmarks/allocator.py [--jobs rep-fp32 rep-default td-fp32 td-default] [--iters 20] [--rounds 2]

Jobs: ``rep-fp32`` the representation update in fp32, channels-first; ``rep-default`` the job's default
(bf16 where native, channels-last); both with a replay sample per update and the probe every update,
as ``train_throughput.py``. ``td-fp32`` the TD-MPC2 1M update and plan, eager fp32 (walker shapes, as
``planning_latency.py``); ``td-default`` the same with the online job's defaults (compile, bf16, fused Adam:
each child compiles first, ~1 min).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
JOBS = ("rep-fp32", "rep-default", "td-fp32", "td-default")
REP = {"rep-fp32": "counting perf.precision=fp32 perf.channels_last=false", "rep-default": "counting"}
TD = {"td-fp32": (), "td-default": ("perf.compile=true", "perf.precision=auto", "perf.fused_adam=true")}


def faults() -> int:
    """This process's minor page faults so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(fn: Callable[[], object], iters: int) -> dict[str, float]:
    """ms per call and minor page faults per call of ``fn`` after three warm-up calls (the heap grows in those)."""
    for _ in range(3):
        fn()
    before, start = faults(), time.perf_counter()
    for _ in range(iters):
        fn()
    return {"ms": (time.perf_counter() - start) / iters * 1e3, "faults": (faults() - before) / iters}


def child(job: str, reuse: bool, iters: int) -> dict[str, dict[str, float]]:
    """One job's calls in this process (``reuse``: :func:`agent.run.allocator.reuse_freed_memory` first)."""
    from agent.run.allocator import reuse_freed_memory

    if reuse and (problem := reuse_freed_memory()) is not None:
        raise SystemExit(f"malloc_reuse cannot be applied here: {problem}")
    import torch

    sys.path.insert(0, str(HERE))
    if job in REP:
        from train_throughput import config, filled_buffer

        from agent.agents.factory import build_agent

        cfg = config(REP[job], 256, "cpu")
        buffer = filled_buffer(cfg, 5_000)
        torch.manual_seed(0)
        agent = build_agent(cfg, (3, 64, 64), 1, "cpu")
        out = {"update": measure(lambda: agent.update(buffer.sample()), iters)}
    else:
        from walker import OBS, update_batch, walker_agent

        agent = walker_agent("1m", overrides=TD[job])
        batch, obs = update_batch(), torch.randn(1, OBS)
        out = {"update": measure(lambda: agent.update(batch), iters), "plan": measure(lambda: agent.act(obs, eval_mode=False), iters)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {call: {**row, "peak_mib": peak} for call, row in out.items()}


def run_child(job: str, reuse: bool, iters: int) -> dict[str, dict[str, float]]:
    """:func:`child` in a process of its own (the allocator setting is process-wide)."""
    cmd = [sys.executable, __file__, "--child", job, "--reuse", str(int(reuse)), "--iters", str(iters)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{job} (reuse={reuse}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--reuse", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, bool(args.reuse), args.iters)))
        return
    import torch

    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads; {args.iters} calls per child, {args.rounds} rounds (median)")
    jobs = list(dict.fromkeys(args.jobs))
    got: dict[tuple[str, str, bool], list[dict[str, float]]] = defaultdict(list)
    for n in range(args.rounds):
        for job in jobs:
            for reuse in (False, True) if n % 2 == 0 else (True, False):  # alternating which goes first
                for call, row in run_child(job, reuse, args.iters).items():
                    got[job, call, reuse].append(row)
    med = {key: {k: median(r[k] for r in rows) for k in rows[0]} for key, rows in got.items()}
    base = med.get(("rep-fp32", "update", False))
    if base is None and any(job in REP for job in jobs):
        print("(the x rep-fp32 column needs the rep-fp32 job in --jobs)")
    print(f"{'job':>11} {'call':>6} {'malloc_reuse':>12} {'ms':>7} {'per s':>6} {'faults':>8} {'child peak MiB':>14} {'x glibc':>7} {'x rep-fp32':>10}")
    for job, call, reuse in ((j, c, r) for j in jobs for c in ("update", "plan") for r in (False, True) if (j, c, r) in med):
        row = med[job, call, reuse]
        own = med[job, call, False]["ms"] / row["ms"]
        vs = f"{base['ms'] / row['ms']:.2f}x" if base and job in REP else "-"
        print(f"{job:>11} {call:>6} {str(reuse).lower():>12} {row['ms']:>7.1f} {1e3 / row['ms']:>6.2f} {row['faults']:>8.0f} {row['peak_mib']:>14.0f} {own:>6.2f}x {vs:>10}")


if __name__ == "__main__":
    main()
