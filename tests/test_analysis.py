"""Tests for agent.analysis (representation metrics and figures)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from matplotlib.figure import Figure

from agent import analysis as A


def _clusters(n_per: int = 20, k: int = 9, d: int = 16, sep: float = 20.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * sep
    labels = torch.arange(k).repeat_interleave(n_per)
    z = centres[labels] + 0.1 * torch.randn(k * n_per, d, generator=g)
    return z, labels


def _noise(n: int = 300, d: int = 16, k: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _brute_silhouette(z: torch.Tensor, labels: torch.Tensor) -> float:
    n = z.shape[0]
    rows = z.tolist()

    def dist(i: int, j: int) -> float:
        return math.dist(rows[i], rows[j])

    lab = labels.tolist()
    scores = []
    for i in range(n):
        same = [j for j in range(n) if lab[j] == lab[i] and j != i]
        if not same:
            scores.append(0.0)
            continue
        a = sum(dist(i, j) for j in same) / len(same)
        b = min(
            sum(dist(i, j) for j in range(n) if lab[j] == c) / lab.count(c)
            for c in set(lab)
            if c != lab[i]
        )
        scores.append(0.0 if max(a, b) == 0 else (b - a) / max(a, b))
    return sum(scores) / n


# ------------------------------------------------------------------ metrics
def test_separated_clusters_perfect():
    z, labels = _clusters()
    assert A.nearest_centroid_accuracy(z, labels) == 1.0
    assert A.knn_accuracy(z, labels, k=5) == 1.0
    assert A.linear_probe_accuracy(z, labels, seed=3) == 1.0
    assert A.silhouette_score(z, labels) > 0.8


def test_random_labels_on_noise_cluster_poorly():
    z, labels = _noise()
    assert A.nearest_centroid_accuracy(z, labels) < 0.5
    assert A.knn_accuracy(z, labels) < 0.3
    assert A.linear_probe_accuracy(z, labels) < 0.3
    assert abs(A.silhouette_score(z, labels)) < 0.1


def test_collapsed_representation():
    z = torch.ones(50, 8) * 3.7
    labels = torch.arange(50) % 9
    assert A.mean_pairwise_distance(z) == 0.0
    assert A.effective_rank(z) == 0.0
    # all points coincide: every centroid is the same point -> ties -> smallest label
    assert A.nearest_centroid_accuracy(z, labels) == pytest.approx(6 / 50)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_equal_variance_directions(k):
    d = 12
    g = torch.Generator().manual_seed(k)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    basis = q[:, :k].T  # k orthonormal directions in R^d
    z = torch.cat([2.5 * basis, -2.5 * basis]) + torch.randn(d, generator=g, dtype=torch.float64)
    assert A.effective_rank(z) == pytest.approx(k, rel=1e-6)


def test_effective_rank_bounds_on_noise():
    z, _ = _noise(n=200, d=10)
    r = A.effective_rank(z)
    assert 8.0 < r <= 10.0


def test_mean_pairwise_distance_brute_force():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(7, 3, generator=g)
    rows = z.tolist()
    pairs = [math.dist(rows[i], rows[j]) for i, j in itertools.combinations(range(7), 2)]
    assert A.mean_pairwise_distance(z) == pytest.approx(sum(pairs) / len(pairs), rel=1e-9)


def test_silhouette_brute_force():
    g = torch.Generator().manual_seed(7)
    z = torch.randn(13, 4, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 5, 5, 5, 8])  # label 8 is a singleton
    assert A.silhouette_score(z, labels) == pytest.approx(_brute_silhouette(z, labels), abs=1e-9)


def test_silhouette_single_label_is_nan():
    z, _ = _noise(n=20)
    assert math.isnan(A.silhouette_score(z, torch.zeros(20, dtype=torch.long)))


def test_knn_leave_one_out_excludes_self():
    # each label appears as an isolated pair far from others; 1-NN (not self) is the partner
    z = torch.tensor([[0.0], [0.1], [10.0], [10.1], [20.0], [20.1]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert A.knn_accuracy(z, labels, k=1) == 1.0
    # singleton labels can never be predicted under leave-one-out
    assert A.knn_accuracy(z, torch.arange(6), k=1) == 0.0


def test_knn_tie_broken_by_nearest_neighbour():
    z = torch.tensor([[0.0], [1.0], [-2.0], [50.0], [51.0]])
    labels = torch.tensor([2, 2, 1, 0, 0])
    # k=2. point 0: nbrs 1 (label 2, d=1), 2 (label 1, d=2) -> 1:1 tie -> nearest -> 2 (correct;
    #   a smallest-label rule would say 1). point 1: nbrs 0 (label 2), 2 (label 1) -> 2 (correct).
    # point 2: nbrs 0, 1 both label 2 -> wrong. points 3, 4: nbr each other (label 0, d=1) and
    #   point 1 (label 2, d~50) -> tie -> nearest -> 0 (correct).
    assert A.knn_accuracy(z, labels, k=2) == pytest.approx(4 / 5)


def test_linear_probe_handles_labels_missing_from_train_and_is_deterministic():
    z, labels = _clusters(n_per=10, k=4, d=6)
    labels = labels.clone()
    labels[0] = 8  # rare label, possibly absent from train
    a1 = A.linear_probe_accuracy(z, labels, seed=11, epochs=50)
    a2 = A.linear_probe_accuracy(z, labels, seed=11, epochs=50)
    assert a1 == a2 and 0.0 <= a1 <= 1.0
    with pytest.raises(ValueError):
        A.linear_probe_accuracy(z, labels, train_frac=1.0)


def test_representation_metrics_keys_and_types():
    z, labels = _clusters(n_per=8)
    m = A.representation_metrics(z, labels)
    assert list(m) == [
        "centroid_acc",
        "knn_acc",
        "linear_probe_acc",
        "silhouette",
        "mean_pairwise_dist",
        "effective_rank",
    ]
    assert all(type(v) is float for v in m.values())
    json.dumps(m)
    assert m["centroid_acc"] == 1.0 and m["knn_acc"] == 1.0


def test_metrics_accept_grad_tensors_and_do_not_touch_global_rng():
    z, labels = _clusters(n_per=5)
    z = z.requires_grad_(True)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    A.representation_metrics(z, labels)
    assert torch.equal(before, torch.random.get_rng_state())


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "z, labels",
    [
        (torch.randn(10), torch.zeros(10, dtype=torch.long)),  # z not 2-D
        (torch.randn(10, 3), torch.zeros(10, 1, dtype=torch.long)),  # labels not 1-D
        (torch.randn(10, 3), torch.zeros(9, dtype=torch.long)),  # length mismatch
        (torch.randn(1, 3), torch.zeros(1, dtype=torch.long)),  # N < 2
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.tensor([0, 1])),  # NaN
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0])),  # float labels
        (torch.randn(4, 3), torch.tensor([0, -1, 0, 1])),  # negative label
    ],
)
def test_validation_errors(z, labels):
    fns = [
        A.nearest_centroid_accuracy,
        A.knn_accuracy,
        A.linear_probe_accuracy,
        A.silhouette_score,
        A.representation_metrics,
        A.plot_pca,
        A.plot_distance_heatmap,
    ]
    for fn in fns:
        with pytest.raises(ValueError):
            fn(z, labels)


def test_z_only_validation():
    for fn in (A.mean_pairwise_distance, A.effective_rank):
        with pytest.raises(ValueError):
            fn(torch.randn(5))
        with pytest.raises(ValueError):
            fn(torch.randn(1, 4))
        with pytest.raises(ValueError):
            fn(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]))


# ------------------------------------------------------------------ figures
def _save(fig, path):
    assert isinstance(fig, Figure)
    fig.savefig(path)
    assert path.exists() and path.stat().st_size > 1000


def test_plot_pca(tmp_path):
    z, labels = _clusters(n_per=10)
    fig = A.plot_pca(z, labels, title="pca")
    _save(fig, tmp_path / "pca.png")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == [f"count {c}" for c in range(9)]


def test_plot_pca_degenerate_inputs(tmp_path):
    labels = torch.tensor([0, 1, 1, 3])
    _save(A.plot_pca(torch.randn(4, 1), labels), tmp_path / "d1.png")
    _save(A.plot_pca(torch.zeros(4, 5), labels), tmp_path / "const.png")


def test_plot_distance_heatmap(tmp_path):
    z, labels = _clusters(n_per=6, k=5)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))
    fig = A.plot_distance_heatmap(z[perm], labels[perm], title="dist")
    _save(fig, tmp_path / "heat.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    assert list(ax.get_xticks()) == pytest.approx([2.5, 8.5, 14.5, 20.5, 26.5])
    assert len(fig.axes) == 2  # image + colourbar


def test_plot_reconstructions(tmp_path):
    g = torch.Generator().manual_seed(0)
    orig = torch.randint(0, 256, (5, 3, 64, 64), generator=g, dtype=torch.uint8)
    rec = torch.randn(5, 3, 64, 64, generator=g) * 7 - 3
    rec[1] = 0.25  # constant reconstruction must not crash
    labels = torch.tensor([0, 1, 2, 3, 8])
    fig = A.plot_reconstructions(orig, rec, labels, n=8)
    _save(fig, tmp_path / "rec.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "orig (count 8)" in titles and titles.count("recon") == 5
    _save(A.plot_reconstructions(orig, rec, n=2), tmp_path / "rec2.png")
    with pytest.raises(ValueError):
        A.plot_reconstructions(orig, rec[:, :, :32])
    with pytest.raises(ValueError):
        A.plot_reconstructions(orig, torch.full_like(rec, float("nan")))
