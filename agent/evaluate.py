"""Planning returns of a trained TD-MPC2 agent: ``python -m agent.evaluate run_dir=<dir> [key=value ...]``.

Keys: ``run_dir`` (or ``checkpoint``), ``episodes`` (10), ``device`` (cpu), ``out`` (run dir), ``compile`` (true | false |
auto: torch.compile of the planner, ~1 min on 2 cores before the first episode; default the run's ``perf.compile``,
a ``true`` read as ``auto``).
Writes ``eval.json`` (MPPI and policy-prior-only returns; success rates, null for tasks without one) and ``episode.gif``
(the first MPPI episode, for tasks with pixel observations).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from agent.agents.factory import load_online_agent
from agent.cli import parse
from agent.run.common import obs_info, seed_everything
from agent.run.evaluate import evaluate
from envs import make_env, success_on_termination

KEYS = ("run_dir", "checkpoint", "episodes", "device", "out", "compile")
COMPILE = {"true": True, "false": False, "auto": "auto"}


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv, KEYS)
    episodes = args.get("episodes", "10")
    if not episodes.isdigit() or int(episodes) < 1:
        raise SystemExit(f"episodes must be an integer >= 1, got {episodes!r}")
    episodes = int(episodes)
    asked = args.get("compile")  # None: the run's own perf.compile
    if asked is not None and asked.lower() not in COMPILE:
        raise SystemExit(f"compile must be one of {', '.join(COMPILE)}, got {asked!r}")
    source = args.get("checkpoint") or args["run_dir"]
    try:
        agent, cfg = load_online_agent(source, args.get("device", "cpu"), None if asked is None else COMPILE[asked.lower()])
    except ValueError as err:  # compile=true where torch.compile cannot build
        raise SystemExit(f"{err} (here: compile=auto or compile=false)") from err
    seed_everything(int(cfg["seed"]))
    env = make_env(cfg, num_envs=1, seed=int(cfg["seed"]) + 20_000, device="cpu")
    obs_key = obs_info(env)[0]
    frames: list[np.ndarray] = []
    success = success_on_termination(cfg["task"])
    result = {
        "planner": evaluate(agent, env, obs_key, episodes, use_planner=True, frames=frames, success=success),
        "policy_prior": evaluate(agent, env, obs_key, episodes, use_planner=False, success=success),
        "task": cfg["task"]["name"],
        "compiled": agent.cfg.compile,  # what compile (or the run's perf.compile) resolved to here
    }
    print(json.dumps(result, indent=2))  # first: a write that fails below loses nothing
    out = Path(args.get("out") or (source if Path(source).is_dir() else Path(source).parent.parent))
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        if frames:
            iio.imwrite(out / "episode.gif", np.stack(frames), duration=250, loop=0)
    except OSError as err:
        raise SystemExit(f"could not write the evaluation to {out} ({err}); the results are printed above") from err
    return result


if __name__ == "__main__":
    main()
