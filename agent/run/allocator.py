"""The process's C allocator: freed memory stays in the process for the next update (``malloc_reuse``).

glibc's ``malloc`` serves each block of 128 KiB or more (a threshold it raises as blocks are freed, to
32 MiB at most) from a mapping of its own and unmaps it when freed. A training loop frees and
reallocates the same large activations every update, so each update faults every 4 KiB page of them
back in, and the kernel zeroes each one: on this project's 2-core CPU that was ~43,000 page faults
and 30% of the representation job's default update, 35% of its fp32 update (``benchmarks/allocator.py``,
docs/benchmarks.md). :func:`reuse_freed_memory` raises glibc's mmap and trim thresholds (``mallopt``)
so blocks up to :data:`LIMIT` come from the heap and stay there once freed. The numbers a run computes
are the same; its resident memory stays near its peak instead of falling between updates.

Left alone: allocators other than glibc's (musl, macOS; tcmalloc or jemalloc preloaded) and a glibc
the environment tunes already (``MALLOC_*_`` variables, ``GLIBC_TUNABLES=glibc.malloc.*``).
"""

from __future__ import annotations

import ctypes
import os
import sys

LIMIT = 1 << 30  # blocks up to 1 GiB are reused; a larger one (e.g. a replay storage over 1 GiB) keeps its own mapping
OLD_GLIBC_LIMIT = 32 << 20  # glibc before 2.35 refuses an mmap threshold above 32 MiB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
TUNING_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_applied: list[int] = []  # the limit applied in this process (glibc offers no way to read its thresholds back)


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc and its ``malloc`` is glibc's own (the one ``mallopt``
    tunes; not one a preloaded tcmalloc or jemalloc replaces), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        process, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    address = ctypes.cast(process.malloc, ctypes.c_void_p).value
    return libc if address == ctypes.cast(libc.malloc, ctypes.c_void_p).value else None


def environment_tuning() -> str | None:
    """The environment variable that tunes glibc's malloc already, if any (a user's choice, kept)."""
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return next((v for v in TUNING_VARS if v in os.environ), None)


def reuse_freed_memory(limit: int = LIMIT) -> str | None:
    """Keep freed blocks up to ``limit`` bytes in the process (glibc only; process-wide, for the process's
    lifetime: glibc's own sliding threshold cannot be restored). On a glibc that caps the threshold at
    32 MiB, blocks up to 32 MiB. Returns None when applied as asked, else what happened instead."""
    if not 0 < limit < 2**31:
        raise ValueError(f"limit={limit}: mallopt takes a positive C int (below 2 GiB)")
    libc = glibc()
    if libc is None:
        return "malloc here is not glibc's (another C library, or an allocator preloaded): left as it is"
    if (var := environment_tuning()) is not None:
        return f"{var} tunes glibc's malloc already: left as it is"
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for threshold in dict.fromkeys((limit, min(limit, OLD_GLIBC_LIMIT))):
        # mmap first: a refused threshold changes nothing; the trim threshold (always accepted) then keeps
        # the heap's freed top from going back to the OS
        if libc.mallopt(M_MMAP_THRESHOLD, threshold) and libc.mallopt(M_TRIM_THRESHOLD, threshold):
            _applied.append(threshold)
            if threshold == limit:
                return None
            return f"blocks up to {threshold >> 20} MiB only: this glibc refused a threshold of {limit} bytes"
    return f"glibc's mallopt refused thresholds of {limit} bytes"


def reusing() -> bool:
    """Whether :func:`reuse_freed_memory` was applied in this process (e.g. by an earlier run of a sweep)."""
    return bool(_applied)
