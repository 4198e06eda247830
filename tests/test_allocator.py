"""``malloc_reuse``: freed blocks stay in the process (no page faults on the next update), same numbers.

The allocator setting is process-wide, so the measurements run in child processes: one with glibc's
own thresholds, one with :func:`agent.run.allocator.reuse_freed_memory` applied. (The pytest process
itself has it on once a test has built a run with the default.)
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, TINY_PJEPA

from agent.run import allocator, skeleton
from agent.run.representation import Trainer

GLIBC = pytest.mark.skipif(allocator.glibc() is None or allocator.environment_tuning() is not None, reason="glibc's own malloc, untuned")

FAULTS = """
import json, resource, sys, torch
from agent.run.allocator import reuse_freed_memory, reusing
assert not reusing()
if sys.argv[1] == "reuse" and (problem := reuse_freed_memory()) is not None:
    print(json.dumps(problem))  # e.g. a glibc that caps the threshold at 32 MiB
    sys.exit()
assert reusing() == (sys.argv[1] == "reuse")
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(10 << 20).fill_(1.0)  # 40 MiB: above every threshold of glibc's own
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""

RUN = """
import hashlib, json, sys, torch
from hydra import compose, initialize_config_dir
from agent.run.representation import Trainer
with initialize_config_dir(sys.argv[1], version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[3:])
trainer = Trainer(cfg, sys.argv[2])
trainer.run()
digest = hashlib.sha256(b"".join(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() for t in trainer.agent.state_dict().values()))
print(json.dumps(digest.hexdigest()))
"""


def child(code: str, *args: str) -> object:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@GLIBC
def test_reused_blocks_are_not_faulted_in_again():
    pages = (40 << 20) // 4096
    glibc_own, reused = child(FAULTS, "glibc"), child(FAULTS, "reuse")
    if isinstance(reused, str):
        pytest.skip(reused)
    # the first rounds grow the heap (glibc cannot fit an aligned block into the exact-size one just freed until
    # freed neighbours coalesce); then no page is faulted in again, where glibc's own thresholds map each block anew
    assert max(reused[-5:]) < pages // 100
    assert min(glibc_own[-5:]) > max(reused[-5:])


@GLIBC
def test_malloc_reuse_keeps_a_runs_numbers(tmp_path):
    """A short representation run (pixel frames: its convs' activations are blocks glibc maps) ends with the
    same weights, bit for bit, with glibc's own thresholds and with freed blocks reused."""
    overrides = [*TINY, *TINY_PJEPA, "steps=6", "analysis.every=0", "checkpoint.every=6"]
    runs = {flag: child(RUN, str(ROOT / "configs"), str(tmp_path / flag), *overrides, f"malloc_reuse={flag}") for flag in ("false", "true")}
    assert runs["true"] == runs["false"]


def test_the_run_skeleton_applies_the_setting(monkeypatch, tmp_path, tiny_cfg, caplog):
    calls = []
    monkeypatch.setattr(skeleton, "reuse_freed_memory", lambda: calls.append(1) or "not glibc here")
    monkeypatch.setattr(skeleton, "reusing", lambda: True)  # as after an earlier run of a sweep in this process
    with caplog.at_level(logging.INFO, logger=skeleton.__name__):
        Trainer(tiny_cfg("malloc_reuse=false"), tmp_path / "off")
    assert calls == [] and "an earlier run in this process turned it on: it stays on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=skeleton.__name__):
        Trainer(tiny_cfg(), tmp_path / "on")  # the default
    assert calls == [1] and "malloc_reuse=true: not glibc here" in caplog.text
    with pytest.raises(ValueError, match="malloc_reuse='maybe': must be one of true, false"):
        Trainer(tiny_cfg("malloc_reuse=maybe"), tmp_path / "bad")


def test_reuse_is_refused_or_skipped_with_a_reason(monkeypatch):
    with pytest.raises(ValueError, match="positive C int"):
        allocator.reuse_freed_memory(1 << 31)
    monkeypatch.setattr(allocator, "glibc", lambda: None)
    assert "not glibc's" in allocator.reuse_freed_memory()


class FakeLibc:
    """glibc's ``mallopt`` as an older glibc answers it: thresholds above 32 MiB refused."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:  # a function, as ctypes' (its argtypes are set)
            self.calls.append((param, value))
            return int(param == allocator.M_TRIM_THRESHOLD or value <= allocator.OLD_GLIBC_LIMIT)

        self.mallopt = mallopt


def test_an_older_glibc_gets_the_32_mib_threshold_and_says_so(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    monkeypatch.setattr(allocator, "_applied", [])
    for var in ("GLIBC_TUNABLES", *allocator.TUNING_VARS):
        monkeypatch.delenv(var, raising=False)
    assert allocator.reuse_freed_memory() == "blocks up to 32 MiB only: this glibc refused a threshold of 1073741824 bytes"
    mmap, trim, small = allocator.M_MMAP_THRESHOLD, allocator.M_TRIM_THRESHOLD, allocator.OLD_GLIBC_LIMIT
    assert libc.calls == [(mmap, 1 << 30), (mmap, small), (trim, small)]  # the refused mmap threshold first: trim untouched
    assert allocator.reusing()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # the user's own tuning is kept
    assert allocator.reuse_freed_memory() == "MALLOC_TRIM_THRESHOLD_ tunes glibc's malloc already: left as it is"
    assert len(libc.calls) == 3
