"""The training loop: collect with the paper's random policy, update, log, checkpoint, analyse."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from agent.agents.factory import build_agent, signature
from agent.agents.pjepa import PJEPAAgent
from agent.agents.update import NonFiniteLossError, lr_scale
from agent.analysis.bisim import premise_residuals
from agent.analysis.monitor import (
    analyse,
    analysis_sets,
    check_analysis,
    read_curve,
    summarise,
)
from agent.data.buffer import ReplayBuffer
from agent.data.collection import TRAJ_KEY, RepeatedRandomPolicy, make_collector
from agent.data.workers import LocalCollection, WorkerCollection, shards
from agent.run.checkpoint import Checkpoint
from agent.run.common import aux_data_keys, deadline, obs_info
from agent.run.settings import RepresentationSettings
from agent.run.skeleton import RunSkeleton
from envs import make_env

log = logging.getLogger(__name__)


class Trainer(RunSkeleton):
    """Runs one training job in ``run_dir`` from a resolved run config.

    Files: ``metrics.csv``, ``tb/``, ``checkpoints/{last,step_<n>}.pt``, ``analysis/step_<n>/`` and
    the final ``analysis/`` (``metrics.json``, ``pca.png``, ``heatmap.png``, ``reconstructions.png``).
    """

    s: RepresentationSettings

    def __init__(self, cfg: Any, run_dir: str | Path) -> None:
        super().__init__(cfg, run_dir)
        c, s, d = self.cfg, self.s, self.s.data
        if c["task"]["suite"] == "counting" and c["task"].get("obs_type", "pixels") != "pixels":
            raise ValueError(
                "the representation job analyses a pixel encoder on the counting frames; task.obs_type=state "
                "(the count as observation) is for agent=tdmpc2, as a perception-free upper bound on planning"
            )
        if c["task"]["suite"] == "counting":
            check_analysis(c["analysis"])
        self.env = make_env(c, num_envs=d.num_envs, seed=s.seed, device=d.device)
        self.obs_key, self.obs_shape, self.action_dim = obs_info(self.env)
        self.agent: PJEPAAgent = build_agent(s, self.obs_shape, self.action_dim, self.device)
        self.signature = signature(c, self.obs_shape, self.action_dim)
        self.horizon = s.horizon
        self.data_keys = self._data_keys()
        if d.workers:  # the same data, collected beside the updates
            split = shards(
                s.task, seed=s.seed, total=d.num_envs, workers=d.workers, frames_per_batch=d.frames_per_collect,
                action_hold=d.action_hold, carry=d.hold_across_resets,
            )  # fmt: skip
            self.collection = WorkerCollection(split)  # the processes start at the first collect
        else:
            spec = self.env.action_spec
            policy = RepeatedRandomPolicy(spec.space.low, spec.space.high, d.action_hold, seed=s.seed, carry=d.hold_across_resets)
            self.collection = LocalCollection(make_collector(self.env, policy, d.frames_per_collect))
        self.buffer = ReplayBuffer(
            d.buffer_size, self.horizon, s.batch_size, TRAJ_KEY, obs_keys=self.data_keys,
            device=self.device, storage_device=d.device, obs_once=True,
        )  # fmt: skip
        self.frames = 0
        self._sets = None  # (monitoring, held-out) sets, rendered at the first analysis
        try:
            self.open_logger(self.resume())  # a resume collects again: the workers run from here
        except BaseException:
            self.close_data()
            raise

    def _data_keys(self) -> tuple[str, ...]:
        """Per-observation keys the batch needs beyond ``obs``; checked against the env's specs."""
        keys = list(aux_data_keys(self.agent.aux, self.env, self.s.task["name"]))
        if "count" in self.env.observation_spec.keys():
            keys.append("count")
        return tuple(keys)

    # ------------------------------------------------------------------ checkpoints
    def job_state(self) -> dict:
        return {"frames": self.frames}

    def restore_job_state(self, data: Checkpoint) -> None:
        """Bring the data side to where the checkpoint left it (the RNG states are restored next).

        The collection is a deterministic function of the seed (the env and the random policy have
        their own generators), so collecting the checkpoint's ``frames`` again from the start gives
        the replay buffer, the envs' states and the policy's holds of the unbroken run, without
        storing the buffer; the run then goes on exactly as it would have. Older checkpoints
        without ``frames`` start from a fresh buffer.
        """
        frames = int(data["frames"]) if "frames" in data else 0
        if frames:
            t0 = time.perf_counter()
            self.collect(frames)
            log.info("replayed the collection of %d transitions in %.1f s (exact resume)", frames, time.perf_counter() - t0)

    # ------------------------------------------------------------------ data
    def collect(self, frames: int) -> None:
        """Collect whole batches until at least ``frames`` new transitions are stored."""
        got = 0
        while got < frames:
            got += sum(self.buffer.extend(part) for part in next(self.collection))
        self.frames += got

    def sample(self) -> dict[str, torch.Tensor]:
        return self.buffer.sample()

    # ------------------------------------------------------------------ analysis
    def analyse(self, out_dir: Path) -> dict[str, float | None]:
        """The representation analysis (counting task only), logged as a row of ``repr.csv``."""
        if self.s.task["suite"] != "counting":
            return {}
        self.check_finite()
        if self._sets is None:
            self._sets = analysis_sets(self.s.task, self.cfg["analysis"])
        probe = self.agent.probe
        decode = None
        if probe is not None:
            decode = lambda z: probe(z.to(self.device))  # noqa: E731
        title = f"{self.label()} / step {self.step}"
        metrics = analyse(self.agent.encode, *self._sets, out_dir, decode, title, extra=self.premises(), task=self.s.task)
        self.logger.log(self.step, {f"repr/{k}": float("nan") if v is None else v for k, v in metrics.items()}, table="repr")
        return metrics

    def premises(self) -> dict[str, float | None]:
        """The theorem's premises on a batch of real transitions from the replay buffer.

        Sampled with a forked RNG seeded by the step, so analysing never moves the training's
        random stream.
        """
        if len(self.buffer) == 0:  # data.seed_frames=0: nothing collected yet
            return {"consistency_residual": None, "aux_residual": None}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.s.seed + self.step)
            batch = self.sample()
        aux, was = self.agent.aux, self.agent.training
        targets = aux.targets(batch)  # [H+1, B, ...]: the residual uses the first step
        self.agent.eval()
        out = premise_residuals(
            self.agent.wm, aux, batch["obs"][0], batch["action"][0], batch["obs"][1], None if targets is None else targets[0]
        )  # fmt: skip
        self.agent.train(was)
        return out

    def label(self) -> str:
        """``<aux>-<routing>`` of this run, for figure legends."""
        return f"{self.s.aux.get('_target_', '').split('.')[-1]}-{self.s.routing}"

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, float]:
        """Train to ``cfg.steps`` updates; returns the final analysis metrics."""
        s, d = self.s, self.s.data
        total, log_every = s.steps, s.log.every
        ckpt_every, analysis_every = s.checkpoint.every, s.analysis.every
        probe_every, probe_loss = s.probe.every, None
        if s.optim.schedule == "step" and s.optim.drop_at >= total:
            log.info("optim.drop_at=%d >= steps=%d: this run ends before the rate drops", s.optim.drop_at, total)
        if self.frames == 0:
            self.collect(d.seed_frames)
        bar = self.progress(total, "train")
        t0, steps0 = time.perf_counter(), self.step
        stop_at = deadline(s.time_limit, t0)
        try:
            if analysis_every > 0 and self.step == 0:  # the curve's first point: the initial encoder
                self.analyse(self.run_dir / "analysis" / "step_0000000")
            while self.step < total:
                if self.step % d.collect_every == 0:
                    self.collect(d.frames_per_collect)
                self.agent.set_lr_scale(lr_scale(s.optim.schedule, self.step, s.steps, s.optim.min_lr_scale, s.optim.drop_at))
                try:
                    metrics = self.agent.update(self.sample(), train_probe=self.step % probe_every == 0)
                except NonFiniteLossError as err:
                    raise self.stopped(err) from err
                if "loss/probe" in metrics:
                    probe_loss = metrics["loss/probe"]
                elif probe_loss is not None:  # the probe trains every probe.every updates: log its latest loss
                    metrics["loss/probe"] = probe_loss
                self.step += 1
                bar.update(1)
                if stop_at is not None and time.perf_counter() >= stop_at:
                    log.info("time_limit of %s min reached at step %d of %d: saving and analysing", s.time_limit, self.step, total)
                    total = self.step  # the last step: logged, saved and analysed as the end of the run
                if self.step % log_every == 0 or self.step == total:
                    self.check_finite()
                    rate = (self.step - steps0) / (time.perf_counter() - t0)
                    row = self.logger.log(self.step, {**metrics, "perf/updates_per_s": rate, "data/frames": self.frames})
                    bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in row.items() if k.startswith("loss/")})
                if self.step % ckpt_every == 0 or self.step == total:
                    self.save()
                if analysis_every > 0 and self.step % analysis_every == 0 and self.step < total:
                    self.analyse(self.run_dir / "analysis" / f"step_{self.step:07d}")
            final = self.analyse(self.run_dir / "analysis")
            if final:
                summarise(read_curve(self.run_dir / "repr.csv"), self.run_dir / "analysis", self.label())
            return final
        finally:
            bar.close()
            self.logger.close()
            self.close_data()

    def close_data(self) -> None:
        """Stop the collection (its workers, if any) and close the env."""
        self.collection.shutdown()
        if not self.env.is_closed:
            self.env.close()
