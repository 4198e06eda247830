"""Counter-based random numbers: one independent stream per environment, vectorised over envs.

Each environment ``i`` owns a 64-bit key and a draw counter. Draw ``j`` of a stream is
``splitmix64(key + (counter + j + 1) * GOLDEN)``, so a batch of N envs and N single envs seeded
with ``seed + i`` produce bit-identical numbers, without a Python loop over environments.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class StreamRNG:
    """N independent random streams, one per environment.

    Args:
        n: number of streams (environments).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.keys = np.zeros(n, dtype=np.uint64)
        self.counters = np.zeros(n, dtype=np.uint64)
        self.seed(None)

    def seed(self, seed: int | None) -> None:
        """Stream ``i`` gets key ``mix(seed + i)``; ``None`` draws fresh OS entropy."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**62))
        base = np.arange(self.n, dtype=np.uint64) + np.uint64(int(seed) % (2**64))
        self.keys = _mix(base ^ np.uint64(0x5DEECE66D))
        self.counters = np.zeros(self.n, dtype=np.uint64)

    def bits(self, idx: np.ndarray, k: int) -> np.ndarray:
        """Next ``k`` raw draws of the streams ``idx``: uint64 array ``[len(idx), k]``."""
        steps = np.arange(1, k + 1, dtype=np.uint64)
        pos = self.counters[idx, None] + steps[None, :]
        self.counters[idx] += np.uint64(k)
        return _mix(self.keys[idx, None] + pos * _GOLDEN)

    def integers(self, idx: np.ndarray, k: int, high: int) -> np.ndarray:
        """``k`` integers uniform in ``[0, high)`` per stream: int64 ``[len(idx), k]``."""
        return (self.bits(idx, k) % np.uint64(high)).astype(np.int64)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys.copy(), "counters": self.counters.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.keys = np.asarray(state["keys"], dtype=np.uint64).copy()
        self.counters = np.asarray(state["counters"], dtype=np.uint64).copy()
