"""Data: the paper's repeated-random-action policy, a torchrl collector, and a slice replay buffer."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.envs import EnvBase

TRAJ_KEY = ("collector", "traj_ids")


class RepeatedRandomPolicy(TensorDictModuleBase):
    """Uniform random actions in the action bounds, each held for ``repeat`` steps.

    A new action is drawn for env ``i`` whenever its ``step_count`` is a multiple of ``repeat``
    (so at every reset); with ``carry=True`` the hold counts the policy's own calls instead and
    carries across resets (the reference code's collection). Seeded by its own generator.
    """

    in_keys = ["step_count"]
    out_keys = ["action"]

    def __init__(self, low: torch.Tensor, high: torch.Tensor, repeat: int = 4, seed: int = 0, carry: bool = False) -> None:
        super().__init__()
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        self.repeat, self.carry, self.calls = repeat, carry, 0
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
        fresh = torch.rand(shape, generator=self.gen) * (self.high - self.low).cpu() + self.low.cpu()
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


def make_buffer(capacity: int, horizon: int, batch_size: int, device: str | torch.device = "cpu") -> TensorDictReplayBuffer:
    """Replay buffer of transitions sampling ``batch_size`` sub-trajectories of ``horizon`` steps."""
    sampler = SliceSampler(slice_len=horizon, traj_key=TRAJ_KEY, strict_length=True, cache_values=True)
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device),
        sampler=sampler,
        batch_size=batch_size * horizon,
    )


def add_rollout(buffer: TensorDictReplayBuffer, data: TensorDictBase) -> int:
    """Store a collector batch ``[num_envs, T]`` env-major, so each env's steps stay contiguous."""
    flat = data.reshape(-1)
    buffer.extend(flat)
    return flat.numel()


def to_time_major(
    sample: TensorDictBase, horizon: int, keys: tuple[str, ...], step_keys: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """A flat slice sample ``[B*H]`` -> time-major tensors.

    Returns ``obs [H+1, B, ...]`` (the slice's observations, ``pixels`` or ``observation``,
    followed by the last step's next observation), ``action [H, B, A]``, each of ``keys`` per
    observation ``[H+1, B, ...]`` and each of ``step_keys`` per transition ``[H, B, ...]`` (read
    from ``next``, e.g. ``reward``, ``terminated``).
    """
    s = sample.reshape(-1, horizon)  # [B, H]

    def seq(key: str) -> torch.Tensor:
        return torch.cat([s[key][:, :1], s["next", key]], 1).transpose(0, 1).contiguous()

    out = {"obs": seq("pixels") if "pixels" in s.keys() else seq("observation")}
    out["action"] = s["action"].transpose(0, 1).contiguous()
    for key in keys:
        if key != "obs":
            out[key] = seq(key)
    for key in step_keys:
        out[key] = s["next", key].transpose(0, 1).contiguous()
    return out
