"""``torch.compile`` of the agents' hot functions, written once: whether to compile (``perf.compile``,
``auto`` included), its modes, and the CUDA-graph output rule."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# perf.compile: auto compiles where it is checked and builds: on a CPU whose C++ compiler inductor can use
# (learning checks: docs/results.md sections 26, 28-30); on a GPU it stays eager until the compiled CUDA tests
# (tests/test_cuda.py) have run on one. The online job's default; the representation job's is false (section 30)
COMPILE_CHOICES = (True, False, "auto")
_TORCH_COMPILE = torch.compile  # the probe tries the real one, also where a test stands in for it


def compile_problem(device: str | torch.device) -> str | None:
    """None where ``torch.compile`` (inductor) builds and runs a small function on ``device``, else why not
    (e.g. no working C++ compiler for a CPU, no Triton for a GPU). Probed once per device and process, with
    a kernel no cache holds (a cached one would need no compiler): ~8 s on 2 cores, inductor's imports included
    (most of which a compiling run pays anyway), ~25 s with an empty inductor cache."""
    return _probe(str(torch.device(device)))


@functools.cache
def _probe(device: str) -> str | None:
    unique = float(time.time_ns() % 999_983 + 1)  # baked into the kernel's source: never a cache hit

    def small(x: Tensor) -> Tensor:
        return torch.nn.functional.mish(x) * unique + 1

    try:
        with torch._inductor.config.patch(fx_graph_cache=False):
            _TORCH_COMPILE(small, dynamic=False)(torch.ones(8, device=device))
    except RuntimeError as err:  # dynamo's BackendCompilerFailed around inductor's InvalidCxxCompiler, CppCompileError, ...
        inner = getattr(err, "inner_exception", None) or err
        lines = str(inner).strip().splitlines()
        return f"{type(inner).__name__}: {lines[0] if lines else ''}"
    return None


def resolve_compile(asked: bool | str, device: str | torch.device, mode: str = "default") -> bool:
    """Whether a run compiles: ``True`` / ``False`` as asked; ``auto``: on a CPU where :func:`compile_problem`
    finds none, never on another device (see :data:`COMPILE_CHOICES`).

    Raises:
        ValueError: before any work, naming the way out: ``asked`` is not one of :data:`COMPILE_CHOICES`;
            it is ``True`` where ``torch.compile`` cannot build; or the run is eager while ``mode`` (``perf.compile_mode``)
            is not the default, which it would then ignore.
    """
    if not any(asked == c and type(asked) is type(c) for c in COMPILE_CHOICES):
        raise ValueError(f"unknown compile setting {asked!r}; expected one of {COMPILE_CHOICES}")
    check_compile_mode(mode)
    dev = torch.device(device)
    if asked is True:
        problem = compile_problem(dev)
        if problem is not None:
            raise ValueError(f"perf.compile=true, but torch.compile cannot build on {dev} ({problem}); use perf.compile=auto or false")
        return True
    compiles = asked == "auto" and dev.type == "cpu" and compile_problem(dev) is None
    if not compiles and mode != "default":
        why = "perf.compile=false" if asked is False else f"perf.compile=auto is eager on {dev}"
        raise ValueError(f"perf.compile_mode={mode} would be ignored: {why}; add perf.compile=true to compile in that mode")
    return compiles


# inductor's modes; reduce-overhead and max-autotune also record CUDA graphs (a CPU graph runs without them)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def check_compile_mode(mode: str) -> None:
    """Raise ``ValueError`` for a mode other than :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")


def check_compile(compile: bool, mode: str) -> None:
    """An agent config's resolved switch and mode: ``compile`` a bool (``perf.compile=auto`` is resolved before,
    by :func:`resolve_compile`), ``mode`` one of :data:`COMPILE_MODES`; else ``ValueError``."""
    check_compile_mode(mode)
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False here, got {compile!r} (resolve auto with agent.agents.compiled.resolve_compile)")


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
