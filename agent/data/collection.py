"""Data collection: the paper's repeated-random-action policy, and the collector of its batches: torchrl's,
or for the counting env on the CPU a direct one with the same batches (the replay buffer is
:mod:`agent.data.buffer`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

if TYPE_CHECKING:
    from envs.counting import CountingEnv

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
        return tensordict.set("action", self.act(tensordict.get("step_count")))

    def act(self, steps: torch.Tensor) -> torch.Tensor:
        """Actions ``[*batch, A]`` for the envs' step counts ``steps [*batch, 1]`` (on their device)."""
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
        return self.last.to(steps.device).clone()


def make_collector(
    env: EnvBase, policy: TensorDictModuleBase, frames_per_batch: int, direct: bool = True
) -> Collector | DirectCollector:
    """An endless synchronous collector yielding ``[num_envs, T]`` batches, ``T = max(1, frames_per_batch //
    num_envs)``: a :class:`DirectCollector` where it applies (``direct``; the same batches), else torchrl's."""
    n = env.batch_size.numel()
    frames_per_batch = max(n, frames_per_batch // n * n)
    if direct and DirectCollector.applies(env, policy):
        return DirectCollector(env, policy, frames_per_batch)
    return Collector(env, policy, frames_per_batch=frames_per_batch, total_frames=-1, trust_policy=True, auto_register_policy_transforms=False)


class DirectCollector:
    """torchrl's ``Collector`` batches of a batched :class:`CountingEnv` on the CPU with the
    :class:`RepeatedRandomPolicy`, from stepping the env's simulation directly.

    The same batches, key for key and bit for bit (``tests/test_data.py``): the policy reads each step's
    ``step_count``; each step stores the observation, the action and the next observation with its reward
    and flags; a finished episode's env is reset before its next step (its first observation then), and gets
    a new trajectory id. As the ``Collector``, it resets the env and calls the policy once (dropping the action)
    when built. What is skipped is the per-step TensorDict work of torchrl's env and collector around the numpy
    simulation: half of each of the representation job's collects (``docs/benchmarks.md``). Each batch lives
    in buffers the next one overwrites: store it before asking again.
    """

    def __init__(self, env: CountingEnv, policy: RepeatedRandomPolicy, frames_per_batch: int) -> None:
        if not self.applies(env, policy):
            raise ValueError("a DirectCollector steps a batched CountingEnv on the CPU with a RepeatedRandomPolicy")
        self.env, self.policy, self.steps = env, policy, max(1, frames_per_batch // env.n)
        n, t = env.n, self.steps
        obs = env.observe()
        seq = {k: torch.empty((n, t, *v.shape[1:]), dtype=v.dtype) for k, v in obs.items()}
        flag = torch.zeros((n, t, 1), dtype=torch.bool)  # the current step's flags: always false (done envs were reset)
        nxt = {k: v.clone() for k, v in seq.items()} | {"reward": seq["obs_reward"].clone()}
        nxt |= {k: flag.clone() for k in ("done", "terminated", "truncated")}
        self.batch = TensorDict(
            {**seq, "action": torch.empty((n, t, *env.action_spec.shape[1:]), dtype=env.action_spec.dtype), "done": flag, "terminated": flag.clone(),
             "truncated": flag.clone(), "next": nxt, TRAJ_KEY: torch.empty((n, t), dtype=torch.long)},
            batch_size=[n, t],
        )  # fmt: skip
        self._now = {k: self.batch.get(k) for k in (*seq, "action", TRAJ_KEY)}  # the batch's leaves, looked up once
        self._next = {k: self.batch.get(("next", k)) for k in nxt}  # (a TensorDict lookup costs a few us: ~15 per step)
        env.reset()  # as the Collector does when built: reset, and one policy call whose action it drops
        self.policy.act(env.observe()["step_count"])
        self._ids = torch.arange(n)  # each env's current trajectory id
        self._next_id = n

    @staticmethod
    def applies(env: EnvBase, policy: TensorDictModuleBase) -> bool:
        """Whether ``env`` and ``policy`` are what this collector steps (else torchrl's ``Collector`` is used)."""
        # imported here: this module stays free of a concrete env until one is met
        from envs.counting import CountingEnv

        return (
            type(env) is CountingEnv and len(env.batch_size) == 1 and env.device.type == "cpu"
            and isinstance(policy, RepeatedRandomPolicy)
        )  # fmt: skip

    def __iter__(self) -> DirectCollector:
        return self

    def __next__(self) -> TensorDict:
        env, now, nxt = self.env, self._now, self._next
        for t in range(self.steps):
            for key, value in env.observe().items():
                now[key][:, t] = value
            action = self.policy.act(now["step_count"][:, t])
            now["action"][:, t] = action
            now[TRAJ_KEY][:, t] = self._ids
            terminated, truncated = env.advance(action)
            for key, value in env.observe().items():
                nxt[key][:, t] = value
            nxt["reward"][:, t] = nxt["obs_reward"][:, t]
            nxt["terminated"][:, t, 0] = torch.from_numpy(terminated)
            nxt["truncated"][:, t, 0] = torch.from_numpy(truncated)
            done = terminated | truncated
            nxt["done"][:, t, 0] = torch.from_numpy(done)
            ended = np.flatnonzero(done)
            if len(ended):  # the next step starts a new episode there
                env.reset_envs(ended)
                self._ids[torch.from_numpy(ended)] = torch.arange(self._next_id, self._next_id + len(ended))
                self._next_id += len(ended)
        return self.batch

    def shutdown(self) -> None:
        """Close the env (as torchrl's ``Collector.shutdown``)."""
        self.env.close()
