"""The bisimulation module: known answers on hand-made MDPs, the counting MDP, and the encoder measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.analysis.bisim import (
    class_agreement,
    counting_mdp,
    largest_bisimulation,
    premise_residuals,
    unhealthy_collapse,
)

CYCLE = np.array([[1], [2], [3], [0]])  # four states on a cycle, one action


@pytest.mark.parametrize(
    ("aux", "classes"),
    [
        (None, [0, 0, 0, 0]),  # nothing tells the states apart
        ([0, 0, 0, 0], [0, 0, 0, 0]),
        ([0, 1, 0, 1], [0, 1, 0, 1]),  # period 2: two classes
        ([0, 1, 0, 0], [0, 1, 2, 3]),  # one marked state: its distance to it tells all four apart
    ],
)
def test_aux_function_shapes_the_partition(aux, classes):
    np.testing.assert_array_equal(largest_bisimulation(CYCLE, aux), classes)


def test_transitions_alone_can_split_states():
    # 0 -> 2, 1 -> 3, 2 and 3 absorbing; aux marks 2 only: 0 and 1 differ through their successors
    table = np.array([[2], [3], [2], [3]])
    np.testing.assert_array_equal(largest_bisimulation(table, [0, 0, 1, 0]), [0, 1, 2, 1])


def test_counting_mdp_is_nine_way_by_count_with_the_reward_and_one_class_without():
    for reward_type in ("sparse", "dense"):
        table, aux = counting_mdp(reward_type=reward_type)
        assert len(np.unique(largest_bisimulation(table, aux))) == 9  # Proposition 1
    table, _ = counting_mdp()
    assert len(np.unique(largest_bisimulation(table, None))) == 1


@pytest.mark.parametrize(
    ("table", "aux", "message"),
    [
        (np.array([1, 0]), None, r"\[states, actions\] integer table"),
        (np.array([[0.0], [1.0]]), None, "integer table"),
        (np.array([[1], [2]]), None, "action 0 leads state 1 to 2, outside the state set 0..1"),
        (np.array([[1], [0]]), [0, 1, 2], "aux has 3 values for 2 states"),
    ],
)
def test_bad_tables_are_refused(table, aux, message):
    with pytest.raises(ValueError, match=message):
        largest_bisimulation(table, aux)


def test_collapse_and_agreement_on_synthetic_latents():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(9), 20)
    apart = rng.normal(size=(9, 16))[classes] * 10 + rng.normal(size=(180, 16)) * 0.1
    merged = rng.normal(size=(180, 16)) * 1e-3 + np.where(classes[:, None] < 5, 0.0, 5.0)  # 9 classes in 2 blobs
    noise = rng.normal(size=(180, 16))
    assert unhealthy_collapse(apart, classes) == 0.0 and class_agreement(apart, classes) > 0.99
    # 4 of 9 classes' cross pairs share a blob with another class: about half of those look merged
    assert 0.15 < unhealthy_collapse(merged, classes) < 0.3 and class_agreement(merged, classes) < 0.5
    assert 0.45 < unhealthy_collapse(noise, classes) < 0.55  # no structure
    assert unhealthy_collapse(noise * 1e-4, classes) == unhealthy_collapse(noise, classes)  # shrinking is not healing
    assert unhealthy_collapse(apart * 1e-4, classes) == 0.0
    assert unhealthy_collapse(np.zeros((10, 4)), np.repeat(np.arange(5), 2)) == 1.0
    with pytest.raises(ValueError, match="same-class pair"):
        unhealthy_collapse(np.zeros((10, 4)), np.arange(10))


def test_premise_residuals_on_a_model():
    from agent.auxiliary import RewardAux
    from agent.models.world_model import WorldModel

    wm = WorldModel(obs_shape=(5,), action_dim=2, latent_dim=8, mlp_dim=16, enc_dim=16, simnorm=False)
    aux = RewardAux(8, (5,))
    obs, action, nxt = torch.randn(32, 5), torch.randn(32, 2), torch.randn(32, 5)
    out = premise_residuals(wm, aux, obs, action, nxt, torch.rand(32, 1))
    assert out["consistency_residual"] > 0 and out["aux_residual"] > 0


def test_analysis_with_no_seed_data_and_more_objects(tiny_cfg, tmp_path):
    from agent.run.representation import Trainer

    final = Trainer(tiny_cfg("data.seed_frames=0", "task.max_objects=10", "steps=4", "analysis.every=2"), tmp_path).run()
    assert 0 <= final["unhealthy_collapse"] <= 1 and final["consistency_residual"] > 0
    from agent.analysis.monitor import count_classes

    assert len(set(count_classes({"max_objects": 10, "target": 4, "reward_type": "dense"}))) == 11


def test_analysis_without_a_same_class_pair_reports_no_collapse_value(tmp_path):
    """A held-out set too small to hold two observations of one count: the metric is null, not a crash."""
    import torch

    from agent.analysis.monitor import analyse, monitoring_set

    pixels, counts = monitoring_set(None, 12, 10000)
    order = torch.argsort(counts)
    pick = torch.stack([order[0], order[-1]])
    assert counts[pick[0]] != counts[pick[1]]
    metrics = analyse(lambda x: x.float().flatten(1)[:, ::97], monitoring_set(None, 32, 42), (pixels[pick], counts[pick]), tmp_path)
    assert metrics["unhealthy_collapse"] is None
