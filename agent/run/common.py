"""What both run loops (and the evaluation CLI) need: seeding, device, env facts, RNG states, wall-time budget."""

from __future__ import annotations

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch and numpy's global generators (the env and policy have their own)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``cfg.device`` (or the setting ``key``) -> a torch device, with a clear error when CUDA is asked
    for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"{key}={name!r} is not a device (cpu, cuda, cuda:<n>): {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key}={name} was asked for but torch.cuda.is_available() is False")
    return device


def obs_info(env) -> tuple[str, tuple[int, ...], int]:
    """(observation key, one observation's shape, action size) from the env's specs."""
    spec = env.observation_spec
    key = "pixels" if "pixels" in spec.keys() else "observation"
    if key not in spec.keys():
        raise ValueError(f"env has neither 'pixels' nor 'observation' in its observation spec: {list(spec.keys())}")
    lead = len(env.batch_size)
    return key, tuple(spec[key].shape[lead:]), int(env.action_spec.shape[-1])


def aux_data_keys(aux, env, task_name: str) -> tuple[str, ...]:
    """The env keys an aux target needs beyond ``obs``; a clear error when the env lacks one."""
    keys = tuple(k for k in aux.data_keys if k != "obs")
    missing = [k for k in keys if k not in env.observation_spec.keys()]
    if missing:
        raise ValueError(
            f"aux target {aux.name!r} needs {missing} from the env, which task {task_name!r} does not "
            f"provide (the counting and control tasks give 'obs_reward'); use aux=random or aux=none here"
        )
    return keys


def deadline(minutes: float | None, start: float) -> float | None:
    """``time_limit`` (minutes of training wall time, or None) -> a ``time.perf_counter()`` deadline.

    The value was range-checked at start (:func:`agent.run.settings.load_settings`).
    """
    return None if minutes is None else start + 60.0 * float(minutes)


def rng_state() -> dict:
    """Global torch (CPU and CUDA) and numpy RNG states as tensors and plain types, for checkpoints."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (also the tuple form of older checkpoints)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(n)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
