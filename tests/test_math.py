"""Pure maths helpers."""

from __future__ import annotations

import pytest
import torch

from agent.math import (
    SimNorm,
    bin_centers,
    soft_ce,
    symexp,
    symlog,
    two_hot,
    two_hot_inv,
)

BINS, LO, HI = 101, -10.0, 10.0


def test_symlog_symexp_inverse():
    x = torch.linspace(-1e3, 1e3, 1001)
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-5, atol=1e-4)


def test_two_hot_is_a_distribution_with_the_right_mean():
    x = torch.tensor([[-7.3], [0.0], [0.5], [1.0], [2.0], [123.0]])
    enc = two_hot(x, BINS, LO, HI)
    torch.testing.assert_close(enc.sum(-1), torch.ones(6))
    assert ((enc > 0).sum(-1) <= 2).all()
    mean = (enc * bin_centers(BINS, LO, HI)).sum(-1, keepdim=True)
    torch.testing.assert_close(mean, symlog(x), atol=1e-5, rtol=1e-5)


def test_two_hot_round_trip_through_logits():
    x = torch.tensor([[-3.0], [0.0], [0.25], [1.0], [2.0], [40.0]])
    logits = torch.log(two_hot(x, BINS, LO, HI).clamp_min(1e-30))
    # softmax(log p) = p, so the expected value of the decoded distribution is x again
    torch.testing.assert_close(two_hot_inv(logits, LO, HI), x, rtol=1e-4, atol=1e-4)


def test_soft_ce_is_smallest_at_the_target():
    x = torch.tensor([[1.0]])
    good = torch.log(two_hot(x, BINS, LO, HI).clamp_min(1e-30))
    bad = torch.log(two_hot(torch.tensor([[5.0]]), BINS, LO, HI).clamp_min(1e-30))
    assert soft_ce(good, x, BINS, LO, HI) < soft_ce(bad, x, BINS, LO, HI)
    assert soft_ce(good, x, BINS, LO, HI).shape == (1, 1)


def test_two_hot_of_nan_is_nan_not_an_index_error():
    enc = two_hot(torch.tensor([[1.0], [float("nan")]]), BINS, LO, HI)
    assert torch.isfinite(enc[0]).all() and torch.isnan(enc[1]).all()


def test_two_hot_rejects_bad_shape():
    with pytest.raises(ValueError, match="trailing dimension"):
        two_hot(torch.zeros(3, 2), BINS, LO, HI)


def test_simnorm_groups_sum_to_one():
    out = SimNorm(8)(torch.randn(4, 32))
    torch.testing.assert_close(out.view(4, 4, 8).sum(-1), torch.ones(4, 4))
    with pytest.raises(ValueError, match="does not divide"):
        SimNorm(8)(torch.randn(2, 12))
