"""The process's C allocator: freed memory stays in the process for the next update (``malloc_reuse``).

glibc's ``malloc`` serves each block of 128 KiB or more (a threshold it raises as blocks are freed, to
32 MiB at most) from a mapping of its own and unmaps it when freed. A training loop frees and
reallocates the same large activations every update, so each update faults every 4 KiB page of them
back in, and the kernel zeroes each one: on this project's 2-core CPU that was ~42,000 page faults
and about a third of the representation job's default update, and 40% of its fp32 update
(``benchmarks/allocator.py``, docs/benchmarks.md). :func:`reuse_freed_memory` raises glibc's mmap
and trim thresholds (``mallopt``) so blocks up to :data:`LIMIT` come from the heap and stay there
once freed. The numbers a run computes are the same; its resident memory stays near its peak
instead of falling between updates. Allocators other than glibc's (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import sys

LIMIT = 1 << 30  # blocks up to 1 GiB are reused; larger ones (a replay buffer's storage) keep their own mapping
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (the one ``mallopt`` tunes), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def reuse_freed_memory(limit: int = LIMIT) -> str | None:
    """Keep freed blocks up to ``limit`` bytes in the process (glibc only; process-wide, for the
    process's lifetime). Returns None when applied, else why not."""
    if not 0 < limit < 2**31:
        raise ValueError(f"limit={limit}: mallopt takes a positive C int (below 2 GiB)")
    libc = glibc()
    if libc is None:
        return f"the C library here is not glibc ({sys.platform}): its allocator is left as it is"
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # trim first: a raised mmap threshold alone still hands the heap's freed top back to the OS
    if not (libc.mallopt(M_TRIM_THRESHOLD, limit) and libc.mallopt(M_MMAP_THRESHOLD, limit)):
        return f"glibc's mallopt refused thresholds of {limit} bytes (an older glibc caps them at 32 MiB)"
    return None
