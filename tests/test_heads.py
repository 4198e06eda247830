"""TD-MPC2 heads: batched Q ensemble vs a loop, TD target, Polyak, policy prior, discount, scale."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from agent.models.heads import (
    QEnsemble,
    RunningScale,
    TanhGaussianPolicy,
    discount_from_episode_length,
    polyak,
    td_target,
)


def test_q_ensemble_batched_equals_loop_over_members():
    torch.manual_seed(0)
    q = QEnsemble(in_dim=6, hidden=16, num_q=5, num_bins=11).eval()
    for p in q.out.parameters():  # the zero-initialised last layer would make every member equal
        torch.nn.init.normal_(p)
    x = torch.randn(3, 4, 6)
    batched = q(x)
    assert batched.shape == (5, 3, 4, 11)
    for i in range(5):
        torch.testing.assert_close(batched[i], q.member(i).eval()(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_q_ensemble_dropout_only_in_training_and_zero_init_output():
    q = QEnsemble(in_dim=4, hidden=8, num_q=2, num_bins=5, dropout=0.5)
    x = torch.randn(16, 4)
    assert torch.equal(q(x), torch.zeros(2, 16, 5))  # zero-initialised last layer
    torch.nn.init.normal_(q.out.weight)
    assert not torch.equal(q(x), q(x))  # dropout in training
    q.eval()
    assert torch.equal(q(x), q(x))
    with pytest.raises(ValueError, match="num_q must be >= 2"):
        QEnsemble(4, 8, num_q=1)


def test_q_ensemble_member_subset_equals_slice_of_full_ensemble():
    torch.manual_seed(0)
    q = QEnsemble(in_dim=6, hidden=16, num_q=5, num_bins=11).eval()
    for p in q.out.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(3, 4, 6)
    members = torch.tensor([3, 1])
    torch.testing.assert_close(q(x, members), q(x)[members])
    pairs = {tuple(q.random_pair(torch.Generator().manual_seed(s)).tolist()) for s in range(30)}
    assert all(a != b and 0 <= a < 5 and 0 <= b < 5 for a, b in pairs) and len(pairs) > 5


def test_td_target_takes_min_of_two_random_members():
    next_q = torch.tensor([[[1.0]], [[5.0]], [[3.0]]])  # [E=3, N=1, 1]
    seen = set()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        t = td_target(torch.tensor([[0.5]]), next_q, torch.tensor([[False]]), 0.9, generator=g)
        seen.add(round(float(t), 4))
    assert seen <= {0.5 + 0.9 * 1.0, 0.5 + 0.9 * 3.0} and len(seen) == 2  # min over pairs: 1, 1, 3
    done = td_target(torch.tensor([[0.5]]), next_q, torch.tensor([[True]]), 0.9)
    assert float(done) == 0.5


def test_polyak_update():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = copy.deepcopy(target)
    polyak(target, online, 0.01)
    for t, b, o in zip(target.parameters(), before.parameters(), online.parameters()):
        torch.testing.assert_close(t, 0.99 * b + 0.01 * o)


def test_policy_prior_log_prob_and_bounds():
    torch.manual_seed(0)
    pi = TanhGaussianPolicy(latent_dim=5, hidden=16, action_dim=3)
    z = torch.randn(7, 5)
    g = torch.Generator().manual_seed(1)
    action, log_prob, mean_action, gauss = pi(z, generator=g)
    assert action.shape == (7, 3) and log_prob.shape == (7, 1) and mean_action.shape == (7, 3)
    assert action.abs().max() < 1
    mean, raw = pi.net(z).chunk(2, -1)
    log_std = -10 + 0.5 * 12 * (torch.tanh(raw) + 1)
    assert log_std.min() >= -10 and log_std.max() <= 2
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    ref = dist.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob, ref, rtol=1e-2, atol=1e-2)
    pre = mean + torch.randn(7, 3, generator=torch.Generator().manual_seed(1)) * log_std.exp()
    torch.testing.assert_close(gauss, Normal(mean, log_std.exp()).log_prob(pre).sum(-1, keepdim=True), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(action, torch.tanh(pre))


@pytest.mark.parametrize("length, gamma", [(1000, 0.995), (100, 0.95), (200, (40 - 1) / 40), (4, 0.95)])
def test_discount_from_episode_length(length, gamma):
    assert math.isclose(discount_from_episode_length(length), gamma)


def test_running_scale_tracks_percentile_range():
    scale = RunningScale(tau=1.0)
    x = torch.linspace(0, 100, 1001)
    scale.update(x)
    assert math.isclose(float(scale.value), 90.0, rel_tol=1e-4)
    torch.testing.assert_close(scale(torch.tensor(45.0)), torch.tensor(0.5))


def test_dropout_is_a_bernoulli_process_scaled_as_f_dropout():
    from agent.models.nets import Dropout, dropped_positions

    torch.manual_seed(0)
    n, p = 400_000, 0.01
    pos = dropped_positions(n, p)
    assert pos.min() >= 0 and pos.max() < n and bool((pos[1:] > pos[:-1]).all())  # distinct, sorted, in range
    sd = math.sqrt(n * p * (1 - p))
    assert abs(len(pos) - n * p) < 4 * sd  # the count of drops: Binomial(n, p)
    assert dropped_positions(0, p).shape == (0,)
    # independence: P(drop | previous dropped) = p as well (gaps of 1 are as frequent as a Bernoulli process's)
    assert abs(float((pos[1:] - pos[:-1] == 1).float().mean()) - p) < 0.004
    # every block of the array gets its share (no bias toward the start)
    per_block = torch.bincount(pos // 40_000, minlength=10).float()
    assert bool((per_block - n * p / 10).abs().lt(5 * math.sqrt(n * p / 10)).all())
    drop = Dropout(0.25)
    x = (torch.rand(64, 33) + 1).T.requires_grad_(True)  # non-contiguous input
    y = drop(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert 0.15 < 1 - float(kept.float().mean()) < 0.35
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)  # no gradient through dropped elements
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x))  # the global generator's stream: seeded, reproducible
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0)(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_compiled_dropout_drops_what_eager_dropout_drops():
    """In compiled code on a CPU, Dropout draws through the opaque ``dropout_keep`` op (inductor's own
    per-element generator cost 10-25 ms a call there): one graph, and the same elements dropped and the
    same gradient as eager code for the same seed."""
    from agent.models.nets import Dropout

    drop = Dropout(0.01)
    compiled = torch.compile(drop, fullgraph=True)  # fullgraph: the op is traced, not a graph break
    x = torch.randn(2, 96, 64)
    got = []
    for fn in (drop, compiled):
        xg = x.clone().requires_grad_(True)
        torch.manual_seed(4)
        y = fn(xg)
        y.backward(torch.full_like(y, 2.0))
        got.append((y.detach(), xg.grad))
    (y_eager, g_eager), (y_comp, g_comp) = got
    assert 0 < int((y_eager == 0).sum()) < 0.03 * x.numel()
    assert torch.equal(y_comp == 0, y_eager == 0) and torch.equal(g_comp, g_eager)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-6, atol=0)
    xb = x.bfloat16()  # bf16 (autocast's Q activations): x / (1 - p) rounded once, as eager code
    torch.manual_seed(4)
    want = drop(xb)
    torch.manual_seed(4)
    assert torch.equal(compiled(xb), want) and want.dtype == torch.bfloat16
