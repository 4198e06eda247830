"""MPPI on a toy world model with a known optimal action sequence."""

from __future__ import annotations

import pytest
import torch

from planner.mppi import MPPI, MPPIConfig


class ToyModel:
    """z' = z + step * a; reward = -||z' - goal||^2; no value, no policy, never terminal."""

    def __init__(self, goal: torch.Tensor, step: float = 0.25, pi_action: float = 0.0) -> None:
        self.goal, self.step, self.pi_action = goal, step, pi_action
        self.action_dim = goal.shape[-1]

    def next(self, z, a):
        return z + self.step * a

    def reward(self, z, a):
        return -(self.next(z, a) - self.goal).pow(2).sum(-1, keepdim=True)

    def Q(self, z, a, members):  # noqa: N802
        return torch.zeros(z.shape[:-1] + (1,))

    def value_members(self, generator):
        return torch.tensor([0, 1])

    def pi(self, z, noise):
        return torch.full(z.shape[:-1] + (self.action_dim,), self.pi_action)

    def termination(self, z):
        return torch.zeros(z.shape[:-1] + (1,))


NO_DRAWS = (torch.zeros(1, 1, 1), torch.tensor([0, 1]))  # the terminal value's policy noise and members (unused by the toy)
CFG = dict(horizon=3, iterations=6, num_samples=256, num_elites=32, num_pi_trajs=8, gamma=1.0)


def test_first_action_is_the_known_optimum_for_every_env():
    goal = torch.tensor([0.5, -0.25])
    planner = MPPI(ToyModel(goal), MPPIConfig(**CFG), seed=0)
    z = torch.tensor([[0.0, 0.0], [0.5, -0.25], [1.0, 0.5], [0.4, -0.5]])
    # optimal: move towards the goal at full speed, then stop; first actions:
    best = torch.tensor([[1.0, -1.0], [0.0, 0.0], [-1.0, -1.0], [0.4, 1.0]])
    action = planner.plan(z, eval_mode=True)
    assert action.shape == (4, 2)
    torch.testing.assert_close(action, best, atol=0.15, rtol=0)


def test_value_estimate_is_discounted_rewards_plus_terminal_q():
    model = ToyModel(torch.tensor([0.0]))
    model.Q = lambda z, a, members: torch.full(z.shape[:-1] + (1,), 10.0)
    planner = MPPI(model, MPPIConfig(**{**CFG, "gamma": 0.5}))
    z = torch.tensor([[[1.0]]])  # [N=1, S=1, D=1]
    actions = torch.full((3, 1, 1, 1), -1.0)  # z: 1 -> 0.75 -> 0.5 -> 0.25
    expected = -(0.75**2) - 0.5 * 0.5**2 - 0.25 * 0.25**2 + 0.125 * 10.0
    torch.testing.assert_close(planner.estimate_value(z, actions, *NO_DRAWS), torch.tensor([[expected]]))


def test_termination_stops_the_return():
    model = ToyModel(torch.tensor([0.0]))
    model.termination = lambda z: torch.ones(z.shape[:-1] + (1,))
    model.Q = lambda z, a, members: torch.full(z.shape[:-1] + (1,), 100.0)
    planner = MPPI(model, MPPIConfig(**CFG))
    value = planner.estimate_value(torch.tensor([[[1.0]]]), torch.zeros(3, 1, 1, 1), *NO_DRAWS)
    torch.testing.assert_close(value, torch.tensor([[-1.0]]))  # only the first reward counts


@pytest.mark.parametrize("p_term, ends", [(0.4, False), (0.6, True)])
def test_termination_is_a_hard_flag_at_one_half(p_term, ends):
    """TD-MPC2: a predicted termination probability above 0.5 ends the trajectory, below it nothing."""
    model = ToyModel(torch.tensor([0.0]))
    model.termination = lambda z: torch.full(z.shape[:-1] + (1,), p_term)
    model.Q = lambda z, a, members: torch.full(z.shape[:-1] + (1,), 100.0)
    planner = MPPI(model, MPPIConfig(**{**CFG, "gamma": 0.5}))
    value = planner.estimate_value(torch.tensor([[[1.0]]]), torch.zeros(3, 1, 1, 1), *NO_DRAWS)
    expected = -1.0 if ends else -1.0 - 0.5 - 0.25 + 0.125 * 100.0
    torch.testing.assert_close(value, torch.tensor([[expected]]))


def test_exploration_noise_and_bounds():
    planner = MPPI(ToyModel(torch.tensor([5.0])), MPPIConfig(**CFG), seed=1)
    z = torch.zeros(64, 1)
    a_eval = planner.plan(z, eval_mode=True)
    a_train = planner.plan(z, eval_mode=False)
    assert a_eval.abs().max() <= 1 and a_train.abs().max() <= 1
    assert torch.allclose(a_eval, torch.ones_like(a_eval), atol=0.1)  # goal far away: full speed


def test_same_seed_same_plan_and_warm_start_shifts():
    z = torch.randn(3, 2)
    runs = []
    for _ in range(2):
        planner = MPPI(ToyModel(torch.tensor([0.3, 0.3])), MPPIConfig(**CFG), seed=7)
        runs.append(torch.stack([planner.plan(z), planner.plan(z)]))
    torch.testing.assert_close(runs[0], runs[1])
    planner = MPPI(ToyModel(torch.tensor([0.3, 0.3])), MPPIConfig(**CFG), seed=7)
    planner.plan(z)
    assert planner._prev_mean.shape == (3, 3, 2)
    planner.reset(torch.tensor([True, False, False]))
    assert planner._prev_mean[:, 0].abs().sum() == 0 and planner._prev_mean[:, 1].abs().sum() > 0


def test_policy_prior_trajectories_are_used():
    # the prior proposes the optimum; with one iteration and tiny noise budget it still wins
    goal = torch.tensor([0.25])
    cfg = MPPIConfig(horizon=1, iterations=1, num_samples=16, num_elites=1, num_pi_trajs=4, min_std=0.05, max_std=0.05, gamma=1.0)
    planner = MPPI(ToyModel(goal, pi_action=1.0), cfg)
    torch.testing.assert_close(planner.plan(torch.zeros(2, 1), eval_mode=True), torch.ones(2, 1))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_pi_trajs": 600}, "num_pi_trajs"), ({"num_elites": 0}, "num_elites"), ({"min_std": 3.0}, "min_std"), ({"horizon": 0}, "horizon")],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPPIConfig(**kwargs)


def test_without_policy_trajectories_every_sequence_is_sampled():
    goal = torch.tensor([0.5, -0.25])
    planner = MPPI(ToyModel(goal, pi_action=1.0), MPPIConfig(**{**CFG, "num_pi_trajs": 0}), seed=0)
    action = planner.plan(torch.tensor([[0.0, 0.0], [1.0, 0.5]]), eval_mode=True)
    torch.testing.assert_close(action, torch.tensor([[1.0, -1.0], [-1.0, -1.0]]), atol=0.15, rtol=0)


def test_a_model_gone_nan_plans_without_raising():
    """Weights a non-finite update left (on a GPU read back only after the plan) make every score NaN: the
    elite is drawn uniformly instead of failing the draw (a device-side assert on a GPU), and the action shows it."""
    model = ToyModel(torch.tensor([0.5, -0.25]))
    model.reward = lambda z, a: torch.full(z.shape[:-1] + (1,), float("nan"))
    with pytest.raises(RuntimeError, match="probability tensor contains"):  # what the draw itself does with NaN
        torch.multinomial(torch.full((1, 4), float("nan")), 1)
    action = MPPI(model, MPPIConfig(**CFG), seed=0).plan(torch.zeros(3, 2))
    assert action.shape == (3, 2) and torch.isnan(action).all()  # NaN weights refit NaN means: the run's check stops it
