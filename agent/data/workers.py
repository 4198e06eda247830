"""The representation job's collection in worker processes, one collect ahead of the updates.

The counting env's envs are independent: env ``i`` of a batch draws from its own stream (``seed + i``,
:mod:`envs.rng`), and the random policy's action for env ``i`` depends only on the draws it shares with the
batch and on env ``i``'s own step count (:class:`RepeatedRandomPolicy`'s ``shard``). So ``W`` processes,
each collecting envs ``[lo, hi)`` of the batch with a collector of its own, give the rows of the single
collector's batch, bit for bit (tested). Only the trajectory ids differ: each worker numbers its own, and
they are renumbered ``id * W + w`` so that no two trajectories share one; the replay buffer reads only
where they change, which is the same.

Why: on a GPU the updates take ~1 ms and the collection does not get faster (the CPU's numpy simulation,
~27 ms per 1,024 transitions here with the direct collector, ~70 ms with torchrl's: 3-7 ms per update at the
default 1,024 per 10 updates). In workers, it runs while the device trains; the main process only copies
each collect into the replay buffer.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch
import torch.multiprocessing as mp
from tensordict import TensorDictBase
from torchrl.collectors import Collector

from agent.data.collection import (
    TRAJ_KEY,
    DirectCollector,
    RepeatedRandomPolicy,
    make_collector,
)


class LocalCollection:
    """The collector in this process: each ``next`` is one batch ``[num_envs, T]``, as a list of one part."""

    def __init__(self, collector: Collector | DirectCollector) -> None:
        self.collector = collector
        self._it = None

    def __next__(self) -> list[TensorDictBase]:
        if self._it is None:
            self._it = iter(self.collector)
        return [next(self._it)]

    def shutdown(self) -> None:
        self.collector.shutdown()


@dataclass(frozen=True)
class Shard:
    """What worker ``index`` of ``workers`` collects: envs ``[first, first + num_envs)`` of ``total``."""

    task: dict
    seed: int
    index: int
    workers: int
    first: int
    num_envs: int
    total: int
    steps_per_batch: int  # T: each batch is [num_envs, T]
    action_hold: int
    carry: bool


def shards(task: dict, *, seed: int, total: int, workers: int, frames_per_batch: int, action_hold: int, carry: bool) -> list[Shard]:
    """The split of ``total`` envs over ``workers`` (contiguous, sizes differing by at most one); each batch
    has the single collector's ``T = max(1, frames_per_batch // total)`` steps per env."""
    if not 1 <= workers <= total:
        raise ValueError(f"data.workers={workers}: between 1 and data.num_envs={total} (each worker collects whole envs)")
    steps = max(1, frames_per_batch // total)
    bounds = [total * w // workers for w in range(workers + 1)]
    return [
        Shard(dict(task), seed, w, workers, bounds[w], bounds[w + 1] - bounds[w], total, steps, action_hold, carry)
        for w in range(workers)
    ]  # fmt: skip


def _serve(conn: Connection, shard: Shard) -> None:
    """A worker: on each ``"next"``, collect one batch into the next of two shared slots and say which.
    It ends at ``"stop"``, and when the main process is gone, also killed: a forked worker holds copies of the
    main process's pipe ends (and the workers forked after it of its sentinel), so no end of file tells it;
    it looks at its parent's pid instead, every second while it waits."""
    from envs import make_env  # in the worker: the env suites import lazily

    torch.set_num_threads(1)
    parent = os.getppid()
    collector = None
    try:
        env = make_env({"task": shard.task}, num_envs=shard.num_envs, seed=shard.seed + shard.first, device="cpu")
        space = env.action_spec.space
        policy = RepeatedRandomPolicy(
            space.low, space.high, shard.action_hold, seed=shard.seed, carry=shard.carry, shard=(shard.first, shard.total)
        )  # fmt: skip
        collector = make_collector(env, policy, shard.num_envs * shard.steps_per_batch)
        batches, slots, k = iter(collector), [None, None], 0
        while True:
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return  # the main process ended without a word (the finally below cleans up)
            if conn.recv() != "next":
                break
            batch, i = next(batches), k % 2
            new = slots[i] is None
            if new:  # the first use of a slot: shared memory, handed to the main process once
                slots[i] = batch.clone().share_memory_()
            else:
                slots[i].update_(batch)
            slots[i].get(TRAJ_KEY).mul_(shard.workers).add_(shard.index)  # ids no other worker gives
            conn.send(("new", i, slots[i]) if new else ("ok", i, None))
            k += 1
    except (EOFError, OSError, KeyboardInterrupt):  # the main process went away (a broken pipe) or was interrupted
        pass
    except Exception:  # noqa: BLE001 - any failure goes back to the main process, with its traceback
        try:
            conn.send(("error", -1, traceback.format_exc()))
        except OSError:  # nobody left to tell
            pass
    finally:
        if collector is not None:
            collector.shutdown()
        conn.close()


class WorkerCollection:
    """The collection split by env over worker processes (see the module's docstring).

    Each ``next`` gives the batch as a list of parts ``[num_envs_w, T]`` in env order (storing them in order
    gives the single collector's buffer); they stay valid until the next call, while the workers collect
    the next batch into their other slot.

    The workers start at the first ``next``. On Linux they are forked (as torch's DataLoader workers are;
    they never touch a GPU, so a CUDA context in this process is no obstacle): they start at once and run no
    ``__main__`` again. Elsewhere they are spawned (a script that starts a job must then guard it with
    ``if __name__ == "__main__"``).
    """

    def __init__(self, shards: list[Shard], timeout: float = 600.0) -> None:
        self.timeout, self.shards = timeout, shards
        self._conns: list[Connection] = []
        self._procs: list[mp.Process] = []
        self._slots: list[list[TensorDictBase | None]] = [[None, None] for _ in shards]
        self._closed = False  # after shutdown: a restart would begin the stream again, so none is made

    def _start(self) -> None:
        ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
        try:
            for shard in self.shards:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, shard), daemon=True, name=f"collection-{shard.index}")
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        except BaseException:
            self.shutdown()
            raise
        for conn in self._conns:
            _ask(conn, "next")

    def _receive(self, w: int) -> TensorDictBase:
        conn, proc = self._conns[w], self._procs[w]
        waited = 0.0
        while not conn.poll(1.0):  # a worker that died without a word (killed, out of memory) is noticed
            waited += 1.0
            if not proc.is_alive():
                raise RuntimeError(f"collection worker {w} exited (code {proc.exitcode}) without sending its batch")
            if waited >= self.timeout:
                raise RuntimeError(f"collection worker {w} sent no batch in {self.timeout:.0f} s")
        try:
            kind, i, payload = conn.recv()
        except (EOFError, OSError) as err:
            proc.join(timeout=5)
            raise RuntimeError(f"collection worker {w} exited (code {proc.exitcode}) without sending its batch") from err
        if kind == "error":
            raise RuntimeError(f"collection worker {w} failed:\n{payload}")
        if kind == "new":
            self._slots[w][i] = payload
        return self._slots[w][i]

    def __next__(self) -> list[TensorDictBase]:
        if self._closed:
            raise RuntimeError("this collection was shut down; its workers' streams cannot go on")
        if not self._procs:
            self._start()
        parts = [self._receive(w) for w in range(len(self._conns))]
        for conn in self._conns:  # the next batch goes into the other slots while the caller stores these
            _ask(conn, "next")
        return parts

    def shutdown(self) -> None:
        """Stop the workers (each finishes the batch it is on) and wait for them."""
        self._closed = True
        for conn in self._conns:
            _ask(conn, "stop")
        deadline = time.monotonic() + 30  # for all of them: each is one batch (well under a second) from stopping
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []


def _ask(conn: Connection, command: str) -> None:
    """Send a worker ``command``; one that is gone already is reported by the next receive, with its error."""
    try:
        conn.send(command)
    except OSError:  # BrokenPipeError: it failed (its message waits in the pipe) or was killed
        pass
