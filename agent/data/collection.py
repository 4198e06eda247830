"""Data collection: the paper's repeated-random-action policy and a torchrl collector (the replay buffer
is :mod:`agent.data.buffer`)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

TRAJ_KEY = ("collector", "traj_ids")


class RepeatedRandomPolicy(TensorDictModuleBase):
    """Uniform random actions in the action bounds, each held for ``repeat`` steps.

    A new action is drawn for env ``i`` whenever its ``step_count`` is a multiple of ``repeat``
    (so at every reset); with ``carry=True`` the hold counts the policy's own calls instead and
    carries across resets (the reference code's collection). Seeded by its own generator.

    ``shard=(first, total)``: this policy acts for envs ``first .. first + N - 1`` of a batch of ``total``.
    It draws for all ``total`` and keeps its rows, so its actions are those rows of the whole batch's
    policy (env ``i``'s action depends only on the shared draws and env ``i``'s own step count).
    """

    in_keys = ["step_count"]
    out_keys = ["action"]

    def __init__(
        self, low: torch.Tensor, high: torch.Tensor, repeat: int = 4, seed: int = 0, carry: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (first, total) with 0 <= first < total, got {shard}")
        self.repeat, self.carry, self.calls, self.shard = repeat, carry, 0, shard
        self.register_buffer("low", low.detach().clone().float())
        self.register_buffer("high", high.detach().clone().float())
        self.gen = torch.Generator().manual_seed(seed)
        self.last: torch.Tensor | None = None

    def rng_state(self) -> dict:
        """Generator, held action and call count, for exact resume."""
        return {"gen": self.gen.get_state(), "last": self.last, "calls": self.calls}

    def set_rng_state(self, state: dict) -> None:
        """Restore :meth:`rng_state`."""
        self.gen.set_state(state["gen"])
        self.last, self.calls = state["last"], int(state["calls"])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        steps = tensordict.get("step_count")
        shape = steps.shape[:-1] + self.low.shape[-1:]
        if self.shard is None:
            fresh = torch.rand(shape, generator=self.gen)
        else:  # the whole batch's draw, then this shard's rows
            first, total = self.shard
            if len(shape) != 2 or first + shape[0] > total:
                raise ValueError(f"a shard {self.shard} policy acts for a flat batch inside the {total} envs, got step counts {tuple(steps.shape)}")
            fresh = torch.rand((total, shape[1]), generator=self.gen)[first : first + shape[0]]
        fresh = fresh * (self.high - self.low).cpu() + self.low.cpu()
        if self.last is None or self.last.shape != fresh.shape:
            self.last = fresh
        else:
            redraw = (steps.cpu() % self.repeat) == 0
            if self.carry:
                redraw = torch.full_like(redraw, self.calls % self.repeat == 0)
            self.last = torch.where(redraw, fresh, self.last)
        self.calls += 1
        return tensordict.set("action", self.last.to(steps.device).clone())


def make_collector(env: EnvBase, policy: TensorDictModuleBase, frames_per_batch: int) -> Collector:
    """An endless synchronous collector yielding ``[num_envs, T]`` batches."""
    n = env.batch_size.numel()
    frames_per_batch = max(n, frames_per_batch // n * n)
    return Collector(env, policy, frames_per_batch=frames_per_batch, total_frames=-1, trust_policy=True, auto_register_policy_transforms=False)
