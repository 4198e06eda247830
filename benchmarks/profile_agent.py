"""Where one TD-MPC2 plan or update spends its CPU time: ``torch.profiler`` over a few calls, top ops by self time.

Same shapes and agent as ``planning_latency.py`` (walker-walk: obs 24, action 6; batch 256, horizon 3).
The first lines print the mean time per call without the profiler, as the baseline to read the
profile's shares against.

    python benchmarks/profile_agent.py [--job update|plan] [--preset 1m] [--precision fp32|bf16] [--compile] [--iters 5] [--rows 25]

With ``--compile`` the agent runs ``perf.compile=true`` (compiled before the timing); inductor's fused
kernels then show up as ``CompiledFunction`` / ``graph_*`` rows.
"""

from __future__ import annotations

import argparse

import torch
from timing import timed
from torch.profiler import ProfilerActivity, profile
from walker import OBS, update_batch, walker_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=("update", "plan"), default="update")
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto")
    parser.add_argument("--compile", action="store_true", help="perf.compile=true")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    overrides = (f"perf.precision={args.precision}",) + (("perf.compile=true",) if args.compile else ())
    agent = walker_agent(args.preset, overrides=overrides)
    batch, obs = update_batch(), torch.randn(1, OBS)
    fn = (lambda: agent.update(batch)) if args.job == "update" else (lambda: agent.act(obs, eval_mode=False))
    fn()  # compiles (with --compile) and warms up
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads; {args.preset} {args.precision}{' compiled' * args.compile} {args.job}: "
          f"{timed(fn, 10, 'cpu') * 1e3:.1f} ms per call without the profiler")  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.iters):
            fn()
    print(f"self CPU time over {args.iters} calls:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
