"""Episodes of a trained TD-MPC2 agent in eval mode: returns, success, optional frames."""

from __future__ import annotations

import numpy as np
import torch
from torchrl.envs import EnvBase

from agent.agents.tdmpc import TDMPCAgent


def batched(x: torch.Tensor, env: EnvBase) -> torch.Tensor:
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
    success: bool = True,
) -> dict[str, float | list[float] | None]:
    """Run ``episodes`` episodes in eval mode (no exploration noise).

    Success is an episode that ended by termination (the counting task reaching its target), for
    tasks where termination means that (``success``: :func:`envs.success_on_termination`); for others
    ``success_rate`` is None.
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
                frames.append(batched(obs, env)[0, -3:].permute(1, 2, 0).cpu().numpy())
            action = agent.act(batched(obs, env), eval_mode=True, use_planner=use_planner).cpu()
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
        "success_rate": float(np.mean(successes)) if success else None,
        "length_mean": float(np.mean(lengths)),
        "episodes": episodes,
        "returns": [float(r) for r in returns],
    }
