"""The benchmark tools measure what they say (their figures are in docs/benchmarks.md, not tested)."""

from __future__ import annotations

import sys

import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from gemm_floor import GemmRecorder, flops, replay  # noqa: E402


def test_gemm_recorder_counts_the_products_of_a_forward_and_backward():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    rec = GemmRecorder()
    with rec:
        lin(x).sum().backward()
    # forward addmm [5,4]@[4,3]; backward: grad of x [5,3]@[3,4] and of the weight [3,5]@[5,4]
    assert sorted(flops(c) for c in rec.calls) == [120, 120, 120]
    with rec:
        torch.bmm(torch.randn(2, 5, 4), torch.randn(2, 4, 3))
    assert flops(rec.calls[-1]) == 2 * 2 * 5 * 4 * 3
    replay(rec.calls)()  # the recorded products run again on fresh operands
