"""Online TD-MPC2-style training on a P-JEPA world model: act, store, update, evaluate, checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from agent.agents.factory import build_tdmpc_agent, episode_length, tdmpc_signature
from agent.agents.update import NonFiniteLossError
from agent.data.buffer import ReplayBuffer, load_buffer
from agent.data.collection import RepeatedRandomPolicy
from agent.run.checkpoint import Checkpoint, CheckpointError
from agent.run.common import aux_data_keys, deadline, obs_info
from agent.run.evaluate import batched, evaluate
from agent.run.settings import OnlineSettings
from agent.run.skeleton import RunSkeleton
from envs import make_env, success_on_termination
from envs.control import stacked_frames

log = logging.getLogger(__name__)


class OnlineTrainer(RunSkeleton):
    """One env, seed steps of random actions, then planning with exploration and updates.

    Files in ``run_dir``: ``metrics.csv`` / ``tb/`` (``loss/*``, ``train/episode_return``,
    ``eval/return``, ``eval/success``), ``checkpoints/{last,step_<n>}.pt`` (the replay buffer is not stored:
    a resume rebuilds it by replaying the run's actions), ``eval/step_<n>.json``.
    """

    s: OnlineSettings

    def __init__(self, cfg: Any, run_dir: str | Path) -> None:
        super().__init__(cfg, run_dir)
        c, s, a = self.cfg, self.s, self.s.agent
        self.env = make_env(c, num_envs=1, seed=s.seed, device="cpu")
        self.obs_key, obs_shape, action_dim = obs_info(self.env)
        self.agent = build_tdmpc_agent(s, obs_shape, action_dim, self.device)
        self.horizon = a.horizon
        self.aux_keys = aux_data_keys(self.agent.aux, self.env, s.task["name"])
        self.has_success = success_on_termination(s.task)
        length = episode_length(s.task)
        if s.task["suite"] == "counting" and self.horizon > 1:
            raise ValueError(
                f"agent.horizon={self.horizon} on the counting task: episodes can end after 1 step and the "
                f"slice sampler drops episodes shorter than the horizon (the fast successes); use agent.horizon=1"
            )
        self.seed_steps = a.seed_steps if a.seed_steps is not None else max(1000, 5 * length)
        self.pretrain_updates = a.pretrain_updates if a.pretrain_updates is not None else self.seed_steps
        self.buffer = ReplayBuffer(
            s.data.buffer_size, self.horizon, s.batch_size, "episode",
            obs_keys=self.aux_keys, step_keys=("reward", "terminated"), device=self.device, storage_device=s.data.device,
            obs_once=self.obs_key == "pixels",  # frames once (half the memory); a state's ~0.2 ms a step would buy little
            frame_stack=stacked_frames(self.env) if self.obs_key == "pixels" else 1,  # and one frame of a stack (1/3 again)
        )  # fmt: skip
        self.signature = tdmpc_signature(c, obs_shape, action_dim)
        spec = self.env.action_spec.space
        # random actions come from their own generator (seeded by the run's seed), not the global RNG whose
        # draws depend on the model built before them: runs that differ only in aux see the same seed steps
        hold = s.data.action_hold if a.collect == "random" else 1  # planner collection: uniform each seed step
        self.random_policy = RepeatedRandomPolicy(spec.low, spec.high, hold, seed=s.seed, carry=s.data.hold_across_resets)
        self.episode, self.pretrained = 0, False
        self.actions: list[torch.Tensor] = []  # every action taken, in order: a resume replays them
        self._td: TensorDict | None = None  # the env's current step (None: reset at the start of run)
        self._ep_return = 0.0
        self.open_logger(self.resume())

    def _act(self, td: TensorDict, random: bool) -> torch.Tensor:
        """An action for the env's (possibly batch-of-one) tensordict.

        Random actions are the paper's (uniform, held ``data.action_hold`` steps) when
        ``agent.collect=random``, else uniform each step (the seed steps).
        """
        if random:
            return self.random_policy(td.clone())["action"]
        action = self.agent.act(batched(td[self.obs_key], self.env), eval_mode=False).cpu()
        return action if self.env.batch_size else action[0]

    def job_state(self) -> dict:
        return {
            "episode": self.episode, "pretrained": self.pretrained,
            "actions": torch.stack(self.actions) if self.actions else torch.zeros(0),
            "planner": self.agent.planner.state_dict(), "eval_planner": self.agent.eval_planner.state_dict(),
            "random_policy": self.random_policy.rng_state(),
        }  # fmt: skip

    def restore_job_state(self, data: Checkpoint) -> None:
        """The replay buffer, the env where it stood, the planners and the random policy."""
        self.episode = int(data["episode"])
        # the pretraining burst happens once; older checkpoints lack the flag: past the seed steps it has happened
        self.pretrained = bool(data["pretrained"]) if "pretrained" in data else self.step > self.seed_steps
        if "actions" in data and len(data["actions"]) == self.step:
            # the replay rebuilds the buffer in the unbroken run's storage order (buffer.pt stores it
            # oldest first, which differs once the ring buffer has wrapped, and so would the batches)
            self._replay(data["actions"])
            self.agent.planner.load_state_dict(data["planner"])
            self.agent.eval_planner.load_state_dict(data["eval_planner"])
            self.random_policy.set_rng_state(data["random_policy"])
            how = "rebuilt by replay"
        else:  # an older checkpoint: a new episode starts, so the interrupted one stays a trajectory of its own
            restored = (self.ckpt_dir / "buffer.pt").exists() and load_buffer(self.buffer, self.ckpt_dir / "buffer.pt", self.step)
            self.episode += 1
            how = "restored" if restored else "refilled by acting"
        log.info("replay buffer: %d transitions, %s", len(self.buffer), how)

    def _replay(self, actions: torch.Tensor) -> None:
        """Step a fresh env through the run's ``actions [step, ...]`` to where the checkpoint left it.

        The env is deterministic given its seed and the actions, so this gives the unbroken run's
        env state, episode counter and replay buffer exactly.
        """
        t0, saved_episode = time.perf_counter(), self.episode
        td, self.episode, self._ep_return = self.env.reset(), 0, 0.0
        for action in actions:
            td.set("action", action.clone())
            td.set("episode", torch.full(self.env.batch_size, self.episode))
            stepped, td = self.env.step_and_maybe_reset(td)
            self.buffer.extend(stepped)
            self._ep_return += float(stepped["next", "reward"].sum())
            if bool(stepped["next", "done"].any()):
                self.episode, self._ep_return = self.episode + 1, 0.0
        self._td, self.actions = td, list(actions)
        if self.episode != saved_episode:
            raise CheckpointError(f"replaying {len(actions)} actions gave episode {self.episode}, the checkpoint says {saved_episode}: the env is not deterministic")
        log.info("replayed %d env steps in %.1f s (exact resume)", len(actions), time.perf_counter() - t0)

    def run(self) -> dict[str, float]:
        """Train for ``agent.total_steps`` env steps; returns the last evaluation."""
        s, a = self.s, self.s.agent
        total, random_collect = a.total_steps, a.collect == "random"
        td, last_eval = self._td if self._td is not None else self.env.reset(), {}
        bar = self.progress(total, "online")
        t0, steps0 = time.perf_counter(), self.step
        stop_at = deadline(s.time_limit, t0)
        try:
            while self.step < total:
                random = self.step < self.seed_steps or random_collect
                action = self._act(td, random)
                if not random:  # never act on a plan from weights a non-finite step left (on a GPU: read back now,
                    self.check_finite()  # the plan queued behind the update, so the host waits once, for the action)
                    if not torch.isfinite(action).all():  # nor on a plan whose own maths overflowed
                        raise self.stopped(NonFiniteLossError(f"the planner's action is not finite: {action.tolist()}"))
                self.actions.append(action.detach().cpu().clone())
                td.set("action", action)
                td.set("episode", torch.full(self.env.batch_size, self.episode))
                stepped, td = self.env.step_and_maybe_reset(td)
                self._td = td
                self.buffer.extend(stepped)
                self._ep_return += float(stepped["next", "reward"].sum())
                self.step += 1
                bar.update(1)
                if stop_at is not None and time.perf_counter() >= stop_at:
                    log.info("time_limit of %s min reached at step %d of %d: evaluating and saving", s.time_limit, self.step, total)
                    total = self.step  # the last step: evaluated and saved as the end of the run
                if bool(stepped["next", "done"].any()):
                    self.logger.log(self.step, {"train/episode_return": self._ep_return}, table="episodes")
                    self.episode, self._ep_return = self.episode + 1, 0.0
                    self.agent.planner.reset()
                if self.step >= self.seed_steps and len(self.buffer) >= max(self.horizon * 4, s.batch_size):
                    n = a.updates_per_step
                    if not self.pretrained:  # TD-MPC2: a burst of updates on the seed data, once
                        n, self.pretrained = max(n, self.pretrain_updates), True
                    for _ in range(n):
                        try:
                            metrics = self.agent.update(self.buffer.sample())
                        except NonFiniteLossError as err:
                            raise self.stopped(err) from err
                    if self.step % s.log.every == 0:
                        self.check_finite()
                        rate = (self.step - steps0) / (time.perf_counter() - t0)
                        row = self.logger.log(self.step, {**metrics, "perf/env_steps_per_s": rate})
                        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in row.items() if k.startswith("loss/")})
                if self.step % a.eval_every == 0 or self.step == total:
                    self.check_finite()
                    last_eval = self.evaluate()
                    self.save()
            return last_eval
        finally:
            bar.close()
            self.logger.close()

    def evaluate(self) -> dict[str, float]:
        """Evaluation episodes on an env seeded by the step (so a resumed run evaluates as an unbroken one)."""
        eval_env = make_env(self.cfg, num_envs=1, seed=self.s.seed + 10_000 + self.step, device="cpu")
        out = evaluate(self.agent, eval_env, self.obs_key, self.s.agent.eval_episodes, success=self.has_success)
        eval_env.close()
        scores = {"eval/return": out["return_mean"]}
        if out["success_rate"] is not None:  # tasks without a notion of success log none (not a rate of 0)
            scores["eval/success"] = out["success_rate"]
        self.logger.log(self.step, scores, table="eval")
        path = self.run_dir / "eval" / f"step_{self.step:07d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
        return out
