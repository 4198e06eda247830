"""Timing and memory helpers shared by the benchmark scripts (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from agent.run.allocator import reuse_freed_memory


def add_malloc_reuse(parser: argparse.ArgumentParser) -> None:
    """``--malloc-reuse``: time with the jobs' default ``malloc_reuse=true``. Without it a benchmark keeps
    glibc's own thresholds, as every table before that setting (``benchmarks/allocator.py`` compares both)."""
    parser.add_argument("--malloc-reuse", action="store_true", help="the jobs' malloc_reuse=true (default here: glibc's own thresholds)")


def apply_malloc_reuse(on: bool) -> str:
    """Apply ``--malloc-reuse`` to this process; the words for the benchmark's header line."""
    if not on:
        return "glibc's malloc thresholds"
    problem = reuse_freed_memory()
    return "malloc_reuse" + (f" ({problem})" if problem else "")


def timed(fn: Callable[[], object], n: int, device: str) -> float:
    """Seconds per call of ``fn`` after two warm-up calls, synchronising CUDA around the timing."""
    fn(), fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def peak_memory(fn: Callable[[], object], device: str) -> int:
    """Bytes of tensor memory ``fn`` held at most at once, above what was allocated before it: its working memory.

    CUDA: the caching allocator's peak. The CPU allocator keeps no statistics, so ``fn`` runs once under
    torch's profiler, which records every tensor allocation and free (inside compiled graphs too), and
    their sizes are summed in time order.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes, events = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while events:
        event = events.pop()
        events.extend(event.children)
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu":
            sizes.append((event.start_time_ns, event.typed[1].alloc_size))  # negative: a free
    held = peak = 0
    for _, size in sorted(sizes):
        held += size
        peak = max(peak, held)
    return peak
