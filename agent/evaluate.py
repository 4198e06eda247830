"""Planning returns of a trained TD-MPC2 agent: ``python -m agent.evaluate run_dir=<dir> [key=value ...]``.

Keys: ``run_dir`` (or ``checkpoint``), ``episodes`` (10), ``device`` (cpu), ``out`` (run dir).
Writes ``eval.json`` (MPPI and policy-prior-only returns, success rates) and ``episode.gif``
(the first MPPI episode, for tasks with pixel observations).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torchrl.envs import EnvBase

from agent.tdmpc_agent import TDMPCAgent

KEYS = ("run_dir", "checkpoint", "episodes", "device", "out")


def _batched(x: torch.Tensor, env: EnvBase) -> torch.Tensor:
    """An observation as a batch of one, whether the env is batched (shape ``[1]``) or not."""
    return x if env.batch_size else x[None]


@torch.no_grad()
def evaluate(
    agent: TDMPCAgent,
    env: EnvBase,
    obs_key: str,
    episodes: int,
    use_planner: bool = True,
    frames: list[np.ndarray] | None = None,
) -> dict[str, float | list[float]]:
    """Run ``episodes`` episodes in eval mode (no exploration noise).

    Success is an episode that ended by termination (the counting task reaching its target);
    tasks that only truncate report a success rate of 0.
    Returns ``return_mean``, ``return_std``, ``success_rate``, ``length_mean``, ``episodes`` and the
    per-episode ``returns`` (outcomes can be bimodal: the mean alone hides it).
    If ``frames`` is a list, the first episode's frames (HWC uint8) are appended to it.
    """
    returns, lengths, successes = [], [], []
    for ep in range(episodes):
        td, total, length, done = env.reset(), 0.0, 0, False
        agent.eval_planner.reset()
        while not done:
            obs = td[obs_key]
            if frames is not None and ep == 0 and obs.dtype == torch.uint8:
                frames.append(_batched(obs, env)[0, -3:].permute(1, 2, 0).cpu().numpy())
            action = agent.act(_batched(obs, env), eval_mode=True, use_planner=use_planner).cpu()
            td.set("action", action if env.batch_size else action[0])
            td = env.step(td)["next"]
            total += float(td["reward"].sum())
            length += 1
            done = bool(td["done"].any())
        returns.append(total)
        lengths.append(length)
        successes.append(bool(td["terminated"].any()))
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "success_rate": float(np.mean(successes)),
        "length_mean": float(np.mean(lengths)),
        "episodes": episodes,
        "returns": [float(r) for r in returns],
    }


def main(argv: list[str] | None = None) -> dict:
    from agent.analyze import parse
    from agent.online import load_online_agent
    from agent.trainer import obs_info, seed_everything
    from envs import make_env

    args = parse(sys.argv[1:] if argv is None else argv, KEYS)
    episodes = args.get("episodes", "10")
    if not episodes.isdigit() or int(episodes) < 1:
        raise SystemExit(f"episodes must be an integer >= 1, got {episodes!r}")
    episodes = int(episodes)
    source = args.get("checkpoint") or args["run_dir"]
    agent, cfg = load_online_agent(source, args.get("device", "cpu"))
    seed_everything(int(cfg["seed"]))
    env = make_env(cfg, num_envs=1, seed=int(cfg["seed"]) + 20_000, device="cpu")
    obs_key = obs_info(env)[0]
    frames: list[np.ndarray] = []
    result = {
        "planner": evaluate(agent, env, obs_key, episodes, use_planner=True, frames=frames),
        "policy_prior": evaluate(agent, env, obs_key, episodes, use_planner=False),
        "task": cfg["task"]["name"],
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
