"""The run skeleton both jobs share: checks, seed, device, checkpointer, resume, save, logger, progress.

A job (:class:`agent.run.representation.Trainer`, :class:`agent.run.online.OnlineTrainer`) is a
subclass that builds its env, agent and data between :meth:`RunSkeleton.__init__` and
:meth:`RunSkeleton.resume`, adds its own state to checkpoints through :meth:`job_state` /
:meth:`restore_job_state`, and writes its loop as the body of ``run``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agent.agents.compiled import compile_problem, resolve_compile
from agent.agents.factory import check_preset, to_dict
from agent.agents.update import (
    NonFiniteLossError,
    check_finite_weights,
    native_bf16,
    resolve_precision,
    training_stopped,
)
from agent.run.allocator import reuse_freed_memory, reusing
from agent.run.checkpoint import Checkpoint, Checkpointer, check_signature
from agent.run.common import (
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from agent.run.config import changed_settings, flat_items
from agent.run.logger import Logger
from agent.run.settings import OnlineSettings, RepresentationSettings, load_settings

log = logging.getLogger(__name__)


class RunSkeleton:
    """Checks the config, seeds, picks the device and owns the run directory's checkpoints.

    Subclasses set ``self.agent`` (with ``state_dict``, ``optim_state`` and ``load_optim_state``)
    and ``self.signature`` before calling :meth:`resume`.
    """

    agent: Any
    signature: dict
    s: RepresentationSettings | OnlineSettings

    def __init__(self, cfg: Any, run_dir: str | Path) -> None:
        self.cfg = to_dict(cfg)  # plain: saved in checkpoints, handed to the env / agent builders
        self.s = load_settings(self.cfg)  # typed and range-checked: what the loops read
        check_preset(self.cfg)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(self.s.device)
        resolve_device(self.s.data.device, "data.device")  # where the buffer stores: checked before any work
        self.precision = resolve_precision(self.s.perf.precision, self.device)  # fp32 | bf16: what this run computes in
        self.log_precision()
        if self.s.threads is not None:
            torch.set_num_threads(self.s.threads)
        if self.s.malloc_reuse:
            if (problem := reuse_freed_memory()) is not None:  # not applied as asked: the run goes on either way
                log.info("malloc_reuse=true: %s", problem)
        elif reusing():
            log.info("malloc_reuse=false, but an earlier run in this process turned it on: it stays on (the same numbers either way)")
        self.compiles = resolve_compile(self.s.perf.compile, self.device, self.s.perf.compile_mode)  # probed before any work
        self.log_compile()
        if self.compiles:  # a sweep's jobs in one process (-m, the basic launcher): dynamo's caches and recompile
            torch._dynamo.reset()  # limit start from nothing for each job, as in a process of its own
        seed_everything(self.s.seed)
        self.checkpointer = Checkpointer(self.ckpt_dir, self.s.checkpoint.keep)
        self.step = 0
        self.logger: Logger | None = None

    def log_precision(self) -> None:
        """Say what ``perf.precision=auto`` resolved to, and warn where asked-for bf16 is emulated."""
        asked = self.s.perf.precision
        if asked == "auto":
            log.info("perf.precision=auto: %s on %s", self.precision, self.device)
        elif asked == "bf16" and not native_bf16(self.device):
            log.warning(
                "perf.precision=bf16, but %s has no native bf16 (CPU: avx512_bf16 or AMX; GPU: Ampere or newer): "
                "autocast is emulated there and can be many times slower than perf.precision=fp32 (or auto)", self.device,
            )  # fmt: skip

    def log_compile(self) -> None:
        """Say what ``perf.compile=auto`` resolved to, and why a run stays eager."""
        if self.s.perf.compile != "auto":
            return
        if self.compiles:
            log.info("perf.compile=auto: compiled on %s", self.device)
        elif self.device.type == "cpu":
            log.warning("perf.compile=auto: eager on %s, torch.compile cannot build here (%s)", self.device, compile_problem(self.device))
        else:
            log.info("perf.compile=auto: eager on %s (auto compiles on a CPU only until the compiled CUDA tests have run on a GPU; perf.compile=true compiles)", self.device)

    # ------------------------------------------------------------------ job hooks
    def job_state(self) -> dict:
        """The job's own checkpoint entries (counters, data state), plain types and tensors."""
        return {}

    def restore_job_state(self, data: Checkpoint) -> None:
        """Bring the job's own state back from a checkpoint (after the agent's weights are loaded)."""

    # ------------------------------------------------------------------ checkpoints
    def check_finite(self) -> None:
        """Stop the run (:meth:`stopped`) if an optimiser step the agent recorded on its device was not finite
        (:class:`agent.agents.finite.FiniteWatch`; at once on a CPU, where nothing is left to ask)."""
        try:
            self.agent.finite.raise_if_bad()
        except NonFiniteLossError as err:
            raise self.stopped(err) from err

    def save(self) -> Path:
        """Write ``step_<n>.pt`` / ``last.pt``; a non-finite step or weights holding NaN/inf stop the run instead."""
        self.check_finite()
        state = self.agent.state_dict()
        try:
            check_finite_weights(state.items())
        except NonFiniteLossError as err:
            raise self.stopped(err) from err
        payload = {
            "step": self.step, "agent": state, "optim": self.agent.optim_state(), "signature": self.signature,
            "config": self.cfg, "precision": self.precision, "compiled": self.compiles, "rng": rng_state(), **self.job_state(),
        }  # fmt: skip
        return self.checkpointer.save(self.step, payload)

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint, if any (``resume=false`` never overwrites one)."""
        if not self.s.resume:
            self.checkpointer.refuse_fresh_start()
            return False
        data = self.checkpointer.latest()
        if data is None:
            return False
        check_signature(data["signature"], self.signature, data.path)
        changed = changed_settings(data["config"], self.cfg)
        if changed:
            log.warning("resuming with settings other than the checkpoint's; the run goes on with this command's: %s", "; ".join(changed))
        saved = data.get("precision")  # absent in checkpoints from before perf.precision=auto
        if saved is not None and saved != self.precision:
            log.warning("the checkpoint trained in %s; this run goes on in %s (perf.precision=%s on %s)", saved, self.precision, self.s.perf.precision, self.device)
        was = data.get("compiled")  # absent in checkpoints from before perf.compile=auto
        if was is not None and was != self.compiles:
            log.warning(
                "the checkpoint trained %s; this run goes on %s (perf.compile=%s on %s): same maths, other rounding",
                *(("compiled", "eager") if was else ("eager", "compiled")), str(self.s.perf.compile).lower(), self.device,
            )  # fmt: skip
        if self.s.perf.fused_adam and "perf.fused_adam" not in flat_items(data["config"]):  # checkpoints from before the switch
            log.warning("the checkpoint's optimisers stepped with Adam's multi-tensor form; this run goes on with its fused kernel (perf.fused_adam=true): same maths, other rounding")
        self.agent.load_state_dict(data["agent"])
        self.agent.load_optim_state(data["optim"])
        self.step = int(data["step"])
        self.restore_job_state(data)
        set_rng_state(data["rng"])
        log.info("resumed from %s at step %d", data.path, self.step)
        return True

    def stopped(self, err: Exception) -> NonFiniteLossError:
        """The error a diverged run stops with (naming the step and the last good checkpoint)."""
        return training_stopped(self.step, err, self.ckpt_dir / "last.pt")

    # ------------------------------------------------------------------ logging
    def open_logger(self, resumed: bool) -> Logger:
        """The run's CSV / TensorBoard logger (rows past the checkpoint dropped on resume)."""
        lg = self.s.log
        sink = None
        if lg.wandb:
            from agent.run.wandb_log import WandbSink

            sink = WandbSink(self.run_dir, self.cfg, lg.wandb_mode, lg.wandb_project)
        self.logger = Logger(self.run_dir, tensorboard=lg.tensorboard, resume_step=self.step if resumed else None, sink=sink)
        return self.logger

    def progress(self, total: int, desc: str) -> tqdm:
        """A progress bar from the current step (off with ``log.progress=false``)."""
        return tqdm(total=total, initial=self.step, disable=not self.s.log.progress, dynamic_ncols=True, desc=desc)
