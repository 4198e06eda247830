"""The benchmark tools measure what they say (their figures are in docs/benchmarks.md, not tested)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from collection import measure  # noqa: E402
from compute_floor import ComputeRecorder, TensorSpec, replay  # noqa: E402
from gpu_wheels import PRUNE, prune  # noqa: E402
from host_overhead import host_ops  # noqa: E402
from steady_rate import steady_rate  # noqa: E402
from timing import peak_memory  # noqa: E402


def test_recorder_counts_the_products_of_a_forward_and_backward():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    rec = ComputeRecorder()
    with rec:
        lin(x).sum().backward()
    # forward addmm [5,4]@[4,3]; backward: grad of x [5,3]@[3,4] and of the weight [3,5]@[5,4]
    assert sorted(c.flops for c in rec.calls) == [120, 120, 120]
    with rec:
        torch.bmm(torch.randn(2, 5, 4), torch.randn(2, 4, 3))
    assert rec.calls[-1].flops == 2 * 2 * 5 * 4 * 3
    replay(rec.calls)()  # the recorded products run again on fresh operands


def test_recorder_counts_convolutions_forward_and_backward_and_replays_their_layout():
    conv = torch.nn.Conv2d(3, 8, 5, stride=2, padding=2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    rec = ComputeRecorder()
    with rec:
        conv(x).sum().backward()  # the input needs no gradient: only the weight's (and bias's)
    fwd = 2 * (2 * 8 * 8 * 8) * (3 * 5 * 5)  # 2 x output elements x (C_in x k x k)
    assert [(c.kind, c.flops) for c in rec.calls] == [("conv", fwd), ("conv", fwd)]
    spec = rec.calls[0].args[0]
    assert isinstance(spec, TensorSpec) and spec.make().is_contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with rec:
        conv(x).sum().backward()
    assert rec.calls[-1].flops == 2 * fwd  # the input's gradient costs one more forward
    replay(rec.calls)()


def test_tensor_spec_rebuilds_broadcast_and_transposed_operands():
    for t in (torch.randn(4, 1).expand(4, 6), torch.randn(3, 5).T, torch.randn(2, 3).to(torch.bfloat16)):
        made = TensorSpec(tuple(t.shape), tuple(t.stride()), t.dtype).make()
        assert (made.shape, made.stride(), made.dtype) == (t.shape, t.stride(), t.dtype)


def test_control_env_benchmark_runs_both_envs():
    cmd = [sys.executable, "benchmarks/control_env.py", "--tasks", "cartpole-swingup", "--steps", "30", "--rounds", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = out.stdout.splitlines()[-1].split()
    assert row[0] == "cartpole-swingup" and row[3].endswith("x") and float(row[3][:-1]) > 0


def test_peak_memory_is_the_most_held_at_once_above_the_start():
    held = torch.empty(8 << 20, dtype=torch.uint8)  # allocated before: not counted

    def work() -> None:
        a = torch.empty(1 << 20, dtype=torch.uint8)
        b = torch.empty(3 << 20, dtype=torch.uint8)  # 4 MiB at once
        del a, b
        c = torch.empty(2 << 20, dtype=torch.uint8)  # then 2 MiB
        del c

    assert peak_memory(work, "cpu") == 4 << 20
    compiled = torch.compile(lambda x: (x @ x.T).relu().sum(), backend="inductor")  # buffers inside a compiled graph count
    x = torch.randn(256, 64)
    compiled(x)
    assert peak_memory(lambda: compiled(x), "cpu") >= 256 * 256 * 4  # the product's [256, 256] output
    assert held.numel() == 8 << 20


def test_planning_latency_reports_time_and_memory_per_row():
    cmd = [sys.executable, "benchmarks/planning_latency.py", "--presets", "tiny", "--switches", "eager", "bf16", "--iters", "1", "--malloc-reuse"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "malloc_reuse" in out.stdout.splitlines()[0]  # the header says which allocator thresholds timed the rows
    header, *rows = out.stdout.splitlines()[1:]
    assert "plan MiB" in header and "update MiB" in header and [r.split()[1] for r in rows] == ["eager", "bf16"]
    for row in rows:
        plan_mib, update_mib = (float(v) for v in row.split()[8:10])
        assert 0 < plan_mib < update_mib  # an update holds the batch's activations for the backward


def test_allocator_benchmark_runs_each_setting_in_a_child_of_its_own():
    cmd = [sys.executable, "benchmarks/allocator.py", "--jobs", "td-fp32", "--iters", "1", "--rounds", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if "malloc_reuse cannot be applied here" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r.split() for r in out.stdout.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("td-fp32", c, f) for c in ("update", "plan") for f in ("false", "true")]
    assert all(float(r[3]) > 0 and r[7].endswith("x") and r[8] == "-" for r in rows)


@pytest.mark.parametrize(
    ("workers", "direct", "once"), [(0, False, False), (0, True, True), (2, True, True)], ids=["torchrl", "direct", "workers"]
)
def test_collection_benchmark_times_the_main_process_stall(workers, direct, once):
    r = measure(workers, collects=3, gap_ms=200.0, num_envs=4, frames=16, direct=direct, obs_once=once)
    assert set(r) == {"alone_ms", "frames_per_s", "stall_ms", "tails"} and r["alone_ms"] > 0
    assert 0 < r["stall_ms"] < 200.0  # the wait between collects is not counted (a 4-env collect takes a few ms)
    assert (0.25 <= r["tails"] < 1.0) if once else r["tails"] == 1.0  # rows of 4 steps: at least each row's end


def test_steady_rate_is_the_window_between_two_rows_of_a_cumulative_rate(tmp_path):
    """A loop that compiled for 30 s, then ran 100 steps/s: its cumulative rate never shows 100, the window does."""
    path = tmp_path / "metrics.csv"
    rows = [(s, s / (30 + s / 100)) for s in range(50, 1001, 50)]
    path.write_text("step,loss/x,perf/env_steps_per_s\n" + "".join(f"{s},0.5,{r}\n" for s, r in rows) + "1001,0.4,\n")
    rate, a, b = steady_rate(path, "perf/env_steps_per_s")
    assert abs(rate - 100) < 1e-6 and (a, b) == (500, 1000) and rows[-1][1] < 80
    resumed = tmp_path / "resumed.csv"  # a resume from step 400: the rate counts from there
    resumed.write_text("step,perf/env_steps_per_s\n" + "".join(f"{s},{(s - 400) / (5 + (s - 400) / 20)}\n" for s in (450, 500, 600)))
    assert abs(steady_rate(resumed, "perf/env_steps_per_s", start=400)[0] - 20) < 1e-6
    with pytest.raises(ValueError, match="from_fraction"):
        steady_rate(path, "perf/env_steps_per_s", from_fraction=1.0)


def test_pruned_wheel_drops_the_assets_and_keeps_a_matching_record(tmp_path):
    wheel = tmp_path / "dm_control-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("dm_control/suite/walker.py", "x = 1\n")
        z.writestr(PRUNE[0] + "soccer/big.xml", "<a/>" * 1000)
        z.writestr("dm_control-1.0.dist-info/RECORD", "stale\n")
    prune(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("dm_control-1.0.dist-info/RECORD").decode()
    assert names == {"dm_control/suite/walker.py", "dm_control-1.0.dist-info/RECORD"}
    assert record.startswith("dm_control/suite/walker.py,sha256=") and "soccer" not in record and "stale" not in record


def test_host_ops_counts_the_kernels_an_op_sequence_launches():
    x = torch.ones(8)
    assert host_ops(lambda: x.view(2, 4).detach() * 2 + 1) == (2, 0)  # a view and a detach launch nothing
    assert host_ops(lambda: torch._foreach_mul_([x, x.clone(), x.clone()], 1.0)) == (3, 0)  # two copies, one multi-tensor op
    assert host_ops(lambda: torch.where(x > 0, 5, x)) == (2, 0)  # the wrapped 5 is host work; > and where launch
    assert host_ops(lambda: (x - 3).abs().sum().item()) == (3, 0)  # the read back is host work


def test_host_overhead_reports_each_row_and_the_deferred_checks_ops():
    cmd = [sys.executable, "benchmarks/host_overhead.py", "--iters", "1", "--rounds", "1", "--batch-size", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r.rsplit(maxsplit=6) for r in out.stdout.splitlines() if r.split()[-1:] == ["0.0"]]  # job, row, 1 round, mean, x, ops, graphs
    ops = {(r[0].strip(), r[1]): int(r[-2]) for r in rows}
    assert sorted(ops) == sorted((j, r) for j in ("representation", "online", "online plan") for r in ("walks", "cpu", "gpu"))
    for job in ("representation", "online"):  # the deferred watch records each step on the device: a few ops more
        assert ops[(job, "walks")] == ops[(job, "cpu")] < ops[(job, "gpu")]
