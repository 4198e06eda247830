"""``torch.compile`` of the agents' hot functions, written once: its modes, and the CUDA-graph output rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# inductor's modes; reduce-overhead and max-autotune also record CUDA graphs (a CPU graph runs without them)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def check_compile_mode(mode: str) -> None:
    """Raise ``ValueError`` for a mode other than :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")


def uses_cuda_graphs(mode: str) -> bool:
    """Whether ``mode`` records CUDA graphs (on a GPU; inductor skips them for CPU graphs)."""
    check_compile_mode(mode)
    return bool(torch._inductor.list_mode_options(mode).get("triton.cudagraphs", False))


def compiled(fn: Callable, mode: str = "default", options: dict[str, Any] | None = None, **kwargs: Any) -> Callable:
    """``torch.compile(fn)`` in ``mode``: inductor's options of that mode, then ``options`` (``kwargs``: the
    rest of ``torch.compile``'s, e.g. ``dynamic``).

    Where the mode records CUDA graphs, each call first begins a new CUDA-graph step and then clones its
    outputs (tensors, also inside tuples, lists and dicts) out of the graphs' shared memory pool: the graphs
    reuse that memory at the next step, so an output still held then (a metric, the latent rollout one
    loss hands to the next) would read what a later call wrote. The clones keep autograd.
    """
    opts = {**torch._inductor.list_mode_options(mode), **(options or {})}
    fast = torch.compile(fn, options=opts, **kwargs)
    if not uses_cuda_graphs(mode):
        return fast

    def run(*args: Any, **kw: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return _cloned(fast(*args, **kw))

    return run


def _cloned(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a named tuple
        return type(out)(*(_cloned(v) for v in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_cloned(v) for v in out)
    if isinstance(out, dict):
        return {k: _cloned(v) for k, v in out.items()}
    return out
