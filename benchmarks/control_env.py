"""DMC state tasks: env steps per second of the thin env (``envs.dmc_state.DMCStateEnv``, what ``make_env``
builds) against torchrl's ``DMControlWrapper`` + the shared transforms (what it built before), and the bare
dm_control physics as the floor. Same run, rows alternating over ``--rounds``; random actions, auto-reset.

    python benchmarks/control_env.py [--tasks walker-walk cartpole-swingup] [--steps 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from dm_control import suite
from torchrl.envs import DMControlWrapper, EnvBase

from envs.control import standardise
from envs.dmc import _split
from envs.dmc_state import DMCStateEnv

REPEAT, LENGTH = 2, 1000  # the dmc task config's defaults: action repeat 2, 1,000 env steps per episode


def torchrl_env(domain: str, task: str) -> tuple[EnvBase, int]:
    env = standardise(DMControlWrapper(suite.load(domain, task), frame_skip=REPEAT), obs_type="state", max_steps=LENGTH // REPEAT)
    return env, int(env.action_spec.shape[-1])


def thin_env(domain: str, task: str) -> tuple[EnvBase, int]:
    env = DMCStateEnv(suite.load(domain, task), frame_skip=REPEAT, max_steps=LENGTH // REPEAT)
    return env, int(env.action_spec.shape[-1])


def env_steps_per_s(env, action_dim: int, steps: int) -> float:
    """Agent steps per second of a torchrl env stepping with ``step_and_maybe_reset``."""
    actions = torch.rand(steps, action_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    td = env.reset()
    start = time.perf_counter()
    for t in range(steps):
        td["action"] = actions[t]
        _, td = env.step_and_maybe_reset(td)
    return steps / (time.perf_counter() - start)


def physics_steps_per_s(domain: str, task: str, steps: int) -> float:
    """Agent steps per second of the bare dm_control env (``REPEAT`` physics steps each, no tensors)."""
    env, rng = suite.load(domain, task), np.random.default_rng(0)
    spec = env.action_spec()
    actions = rng.uniform(spec.minimum, spec.maximum, size=(steps, *spec.shape))
    env.reset()
    start = time.perf_counter()
    for t in range(steps):
        for _ in range(REPEAT):
            timestep = env.step(actions[t])
        if timestep.last():
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["walker-walk", "cartpole-swingup"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; agent steps/s (action repeat {REPEAT}), mean of {args.rounds} alternating rounds")
    print(f"{'task':>18} {'torchrl stack':>14} {'thin env':>10} {'speed-up':>9} {'bare physics':>13}")
    for name in args.tasks:
        domain, task = _split(name)
        envs = {"torchrl": torchrl_env(domain, task), "thin": thin_env(domain, task)}
        rates: dict[str, list[float]] = {"torchrl": [], "thin": [], "physics": []}
        for _ in range(args.rounds):
            for key, (env, a_dim) in envs.items():
                rates[key].append(env_steps_per_s(env, a_dim, args.steps))
            rates["physics"].append(physics_steps_per_s(domain, task, args.steps))
        old, new, bare = (float(np.mean(rates[k])) for k in ("torchrl", "thin", "physics"))
        print(f"{name:>18} {old:>14,.0f} {new:>10,.0f} {new / old:>8.2f}x {bare:>13,.0f}")


if __name__ == "__main__":
    main()
