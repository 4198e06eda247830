"""Train: ``python train.py task=counting [aux=random] [routing=aux_only] ...`` (P-JEPA representation
job) or ``python train.py agent=tdmpc2 task=gym/Pendulum-v1 aux=none`` (online TD-MPC2 with MPPI).

Everything lands in the Hydra run directory (printed at start): metrics.csv, tb/, checkpoints/,
analysis/, and ``status.json`` (running / complete / failed with the reason; read by ``agent.report``).
Rerun with ``hydra.run.dir=<that directory>`` to resume a killed run.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import NoReturn

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from agent.agents.compiled import resolve_compile
from agent.agents.factory import to_dict
from agent.agents.update import NonFiniteLossError
from agent.run.common import resolve_device
from agent.run.config import check_keys
from agent.run.online import OnlineTrainer
from agent.run.representation import Trainer
from agent.run.settings import load_settings
from agent.run.status import write_status

TRAINERS = {"pjepa": Trainer, "tdmpc2": OnlineTrainer}

log = logging.getLogger("train")


def stop(err: Exception, mode: RunMode | None) -> NoReturn:
    """End a job that cannot go on: a clean exit 2 for a single run; in a sweep (``-m``) the error is
    raised, so the launcher records this job as failed and runs the others (a SystemExit would end
    the basic launcher's loop and a Ray worker)."""
    log.error("%s", err)
    if mode == RunMode.MULTIRUN:
        raise err
    sys.exit(2)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    name = cfg.agent.name
    if name not in TRAINERS:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(TRAINERS)}")
    choices = hydra_cfg.runtime.choices
    base = compose(config_name=hydra_cfg.job.config_name, overrides=[f"{g}={choices[g]}" for g in ("task", "aux", "model", "agent")])
    plain = to_dict(cfg)
    try:  # before any work: a key this job would ignore, a value out of range, a device this machine lacks,
        # or perf.compile=true where torch.compile cannot build is an error
        check_keys(plain, to_dict(base), f"agent={name}")
        s = load_settings(plain)
        resolve_compile(s.perf.compile, resolve_device(s.device), s.perf.compile_mode)
    except (ValueError, RuntimeError) as err:
        write_status(run_dir, "failed", reason=f"config: {err}")
        stop(err, hydra_cfg.mode)
    log.info("run directory: %s", run_dir)
    write_status(run_dir, "running", agent=name)
    trainer = None
    try:
        trainer = TRAINERS[name](cfg, run_dir)
        metrics = trainer.run()
    except NonFiniteLossError as err:
        write_status(run_dir, "failed", reason=str(err), step=getattr(trainer, "step", None))
        stop(err, hydra_cfg.mode)
    except (Exception, KeyboardInterrupt) as err:  # recorded for the sweep report, then raised as it was
        write_status(run_dir, "failed", reason=f"{type(err).__name__}: {err}", step=getattr(trainer, "step", None))
        raise
    write_status(run_dir, "complete", agent=name, step=trainer.step, precision=trainer.precision, compiled=trainer.compiles)
    log.info("final metrics: %s", json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
