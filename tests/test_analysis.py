"""Tests for agent.analysis (representation metrics and figures)."""

from __future__ import annotations

import itertools
import math

import numpy as np
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
    """Gaussian noise with random count labels: no count information."""
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
def _blobs(centres: torch.Tensor, labels: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centres[labels] + noise * torch.randn(labels.numel(), centres.shape[1], generator=g)


def test_nine_separated_blobs_score_perfectly_held_out():
    """Fit and held-out sets drawn around the same nine centres: every metric at its best."""
    centres = torch.randn(9, 16, generator=torch.Generator().manual_seed(0)) * 20
    y_fit, y_eval = torch.arange(9).repeat(20), torch.arange(9).repeat(40)
    m = A.representation_metrics(_blobs(centres, y_fit, 0.1, 1), y_fit, _blobs(centres, y_eval, 0.1, 2), y_eval)
    assert list(m) == list(A.METRIC_KEYS)
    assert all(type(v) is float for v in m.values())
    for key in ("insample_centroid_acc", "heldout_centroid_acc", "heldout_knn_acc", "heldout_probe_acc", "kmeans_ari"):
        assert m[key] == 1.0, key
    assert (m["count_clusters"], m["distinct_counts"]) == (9.0, 9.0)
    assert m["silhouette"] > 0.9


def test_one_blob_is_at_chance_and_one_cluster():
    """Counts carry no information: held-out accuracies near chance (1/9), one group, no distinct count."""
    z_fit, y_fit = _noise(n=300, d=16, seed=1)
    z_eval, y_eval = _noise(n=600, d=16, seed=2)
    m = A.representation_metrics(z_fit, y_fit, z_eval, y_eval)
    for key in ("heldout_centroid_acc", "heldout_knn_acc", "heldout_probe_acc"):
        assert m[key] < 0.2, key
    assert (m["count_clusters"], m["distinct_counts"]) == (1.0, 0.0)
    assert abs(m["kmeans_ari"]) < 0.05 and m["silhouette"] < 0.05
    # the paper's in-sample metric on 256 noise points in 256 dimensions (the monitoring set's
    # shape) is far above chance: why the held-out ones exist
    z256, y256 = _noise(n=256, d=256, seed=3)
    assert A.insample_centroid_accuracy(z256, y256) > 0.5


def test_coarse_groups_are_three_clusters():
    """Counts 0-2, 3-5 and 6-8 sharing three blobs (the paper's reward-only picture): 3 groups, none distinct."""
    centres = torch.randn(3, 8, generator=torch.Generator().manual_seed(3)) * 20
    labels = torch.arange(9).repeat(30)
    z = _blobs(centres, labels // 3, 1.0, 4)
    assert A.count_clusters(z, labels) == (3, 0)
    # one count moved far away stands alone
    z[labels == 8] += 100.0
    assert A.count_clusters(z, labels) == (4, 1)


def test_collapsed_representation():
    z = torch.ones(40, 8)
    labels = torch.arange(40) % 9
    m = A.representation_metrics(z, labels, z, labels)
    assert m["encoding_size"] == 0.0 and m["effective_rank"] == 0.0
    assert (m["count_clusters"], m["distinct_counts"]) == (1.0, 0.0)
    assert m["heldout_centroid_acc"] < 0.2


def test_near_collapsed_latent_keeps_its_structure():
    """A latent whose spread is ~1e-7 still separates its counts (the metrics are scale-free)."""
    centres = torch.randn(9, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(9).repeat(10)
    z = 1.0 + 1e-7 * _blobs(centres, y, 0.01, 1)
    m = A.representation_metrics(z, y, z, y)
    assert m["heldout_knn_acc"] == 1.0 and m["kmeans_ari"] == 1.0 and m["distinct_counts"] == 9.0


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
    assert A.silhouette(z, labels) == pytest.approx(_brute_silhouette(z, labels), abs=1e-9)


def test_silhouette_single_label_is_nan():
    z, _ = _noise(n=20)
    assert math.isnan(A.silhouette(z, torch.zeros(20, dtype=torch.long)))


def test_heldout_accuracies_single_fit_class_and_size_mismatch():
    z = torch.randn(10, 4)
    acc = A.heldout_accuracies(z, torch.zeros(10, dtype=torch.long), z, torch.tensor([0] * 5 + [1] * 5))
    assert acc == {"heldout_centroid_acc": 0.5, "heldout_knn_acc": 0.5, "heldout_probe_acc": 0.5}
    with pytest.raises(ValueError, match="differ in size"):
        A.heldout_accuracies(z, torch.arange(10) % 2, torch.randn(10, 5), torch.arange(10) % 2)


def test_metrics_accept_grad_tensors_and_do_not_touch_global_rng():
    z, labels = _clusters(n_per=5)
    z = z.requires_grad_(True)
    torch.manual_seed(123)
    np_before = np.random.get_state()[1].copy()
    before = torch.random.get_rng_state()
    A.representation_metrics(z, labels, z, labels)
    assert torch.equal(before, torch.random.get_rng_state())
    assert (np.random.get_state()[1] == np_before).all()


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
        A.insample_centroid_accuracy,
        A.count_clusters,
        A.kmeans_ari,
        A.silhouette,
        lambda z, y: A.heldout_accuracies(z, y, z, y),
        lambda z, y: A.representation_metrics(z, y, z, y),
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


def test_plot_repr_curves(tmp_path):
    cols = {"step": [0, 500, 1000], **{k: [0.2, 0.5, 0.9] for k in A.METRIC_KEYS}}
    fig = A.plot_repr_curves({"run": cols})
    _save(fig, tmp_path / "curves.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "centroid, held-out" in labels and "reference code, in-sample" not in labels  # 1k updates: before its first point
    long = {**cols, "step": [0, 6000, 12000]}
    fig = A.plot_repr_curves({"a": long, "b": long})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "reference code, in-sample" in labels and "b: centroid, held-out" in labels
    with pytest.raises(ValueError):
        A.plot_repr_curves({})
