"""Representation analysis for JEPA latents (cf. "Why and How Auxiliary Tasks
Improve JEPA Representations", Fig. 2): how well latents cluster by object count.

Pure functions: no environment, no model imports. All metrics are computed in
float64 on CPU from detached copies of the inputs and return plain Python floats.
Pairwise metrics build an [N, N] distance matrix, so they are O(N^2) in memory;
a few thousand samples is fine.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no
global backend state); the caller does ``fig.savefig(path)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

__all__ = [
    "nearest_centroid_accuracy",
    "knn_accuracy",
    "linear_probe_accuracy",
    "silhouette_score",
    "mean_pairwise_distance",
    "effective_rank",
    "representation_metrics",
    "plot_pca",
    "plot_distance_heatmap",
    "plot_reconstructions",
]


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _check_z(z: Tensor) -> Tensor:
    """Validate z [N, D] (N >= 2, D >= 1, finite); return a float64 CPU copy."""
    z = torch.as_tensor(z)
    if z.dim() != 2:
        raise ValueError(f"z must be 2-D [N, D], got shape {tuple(z.shape)}")
    n, d = z.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples, got N={n}")
    if d < 1:
        raise ValueError("z must have at least one feature (D >= 1)")
    if z.is_complex() or z.dtype == torch.bool:
        raise ValueError(f"z must be real-valued, got dtype {z.dtype}")
    z = z.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or infinite values")
    return z


def _check_labels(labels: Tensor, n: int) -> Tensor:
    """Validate labels [N] (non-negative integers); return an int64 CPU copy."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"length mismatch: z has N={n} rows, labels has {labels.shape[0]}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    labels = labels.detach().to(device="cpu", dtype=torch.int64)
    if (labels < 0).any():
        raise ValueError("labels must be non-negative integers (object counts)")
    return labels


def _check(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    zc = _check_z(z)
    return zc, _check_labels(labels, zc.shape[0])


def _pairwise(z: Tensor) -> Tensor:
    """L2 distance matrix [N, N] for float64 z [N, D] (exactly zero diagonal).

    Uses the matmul formulation (fast); float64 keeps its error negligible.
    """
    dist = torch.cdist(z, z, compute_mode="use_mm_for_euclid_dist")
    return dist.fill_diagonal_(0.0)


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def nearest_centroid_accuracy(z: Tensor, labels: Tensor) -> float:
    """In-sample nearest-centroid accuracy.

    z [N, D], labels [N] int. One centroid per present label (mean over all its
    points); each point is assigned to the closest centroid in L2. Distance ties
    go to the smallest label. Returns accuracy in [0, 1].
    """
    z, labels = _check(z, labels)
    classes, inv = torch.unique(labels, sorted=True, return_inverse=True)
    onehot = torch.zeros(z.shape[0], classes.numel(), dtype=torch.float64)
    onehot[torch.arange(z.shape[0]), inv] = 1.0
    centroids = (onehot.T @ z) / onehot.sum(0)[:, None]  # [C, D]
    d2 = (z[:, None, :] - centroids[None, :, :]).pow(2).sum(-1)  # [N, C]
    pred = d2.argmin(dim=1)  # first minimum -> smallest label on ties
    return float((pred == inv).double().mean())


def knn_accuracy(z: Tensor, labels: Tensor, k: int = 5) -> float:
    """Leave-one-out k-NN majority-vote accuracy.

    z [N, D], labels [N] int. Each point is classified by its k nearest *other*
    points (L2; k is capped at N - 1; equal distances are ordered by sample
    index). Vote ties are broken by the nearest neighbour: among the tied labels
    the one whose closest member ranks first among the k neighbours wins.
    """
    z, labels = _check(z, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = z.shape[0]
    k = min(int(k), n - 1)
    dist = _pairwise(z)
    dist.fill_diagonal_(float("inf"))
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]  # [N, k]
    classes, inv = torch.unique(labels, sorted=True, return_inverse=True)
    nb = inv[order]  # [N, k] class indices of neighbours
    c = classes.numel()
    votes = torch.zeros(n, c, dtype=torch.int64).scatter_add_(1, nb, torch.ones_like(nb))
    ranks = torch.arange(k, dtype=torch.int64).expand(n, k)
    first = torch.full((n, c), k, dtype=torch.int64).scatter_reduce_(1, nb, ranks, reduce="amin")
    # votes differ by >= 1 => (k+1) dominates; first-rank in [0, k] breaks ties.
    score = votes * (k + 1) - first
    pred = score.argmax(dim=1)
    return float((pred == inv).double().mean())


def linear_probe_accuracy(
    z: Tensor,
    labels: Tensor,
    *,
    train_frac: float = 0.5,
    epochs: int = 200,
    seed: int = 0,
) -> float:
    """Held-out accuracy of a multinomial logistic-regression probe.

    z [N, D], labels [N] int. A seeded random permutation puts
    round(train_frac * N) points (clamped to [1, N - 1]) in the train split.
    Features are standardised with train mean/std; weights start at zero and are
    trained full-batch with Adam (lr 0.05, weight decay 1e-4) for ``epochs``
    steps. num_classes = max label + 1, so labels absent from train are allowed
    (they are simply never predicted well). Returns test accuracy in [0, 1].
    """
    z, labels = _check(z, labels)
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    n, d = z.shape
    n_train = min(max(int(round(train_frac * n)), 1), n - 1)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    tr, te = perm[:n_train], perm[n_train:]
    mean = z[tr].mean(0)
    std = z[tr].std(0, unbiased=False).clamp_min(1e-8)
    x_tr, x_te = (z[tr] - mean) / std, (z[te] - mean) / std
    y_tr, y_te = labels[tr], labels[te]
    num_classes = int(labels.max()) + 1
    w = torch.zeros(d, num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(int(epochs)):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(x_tr @ w + b, y_tr)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = (x_te @ w + b).argmax(dim=1)
    return float((pred == y_te).double().mean())


def silhouette_score(z: Tensor, labels: Tensor) -> float:
    """Mean silhouette coefficient with L2 distances.

    z [N, D], labels [N] int. s_i = (b_i - a_i) / max(a_i, b_i) with a_i the
    mean distance to the other members of i's cluster and b_i the smallest mean
    distance to another cluster; s_i = 0 for singleton clusters (and when
    a_i = b_i = 0). Returns NaN if fewer than 2 distinct labels are present.
    """
    z, labels = _check(z, labels)
    classes, inv = torch.unique(labels, sorted=True, return_inverse=True)
    c = classes.numel()
    if c < 2:
        return float("nan")
    n = z.shape[0]
    onehot = torch.zeros(n, c, dtype=torch.float64)
    onehot[torch.arange(n), inv] = 1.0
    sizes = onehot.sum(0)  # [C]
    sums = _pairwise(z) @ onehot  # [N, C] sum of distances to each cluster
    own = sizes[inv]
    a = sums[torch.arange(n), inv] / (own - 1).clamp_min(1.0)
    means = sums / sizes
    means[torch.arange(n), inv] = float("inf")
    b = means.min(dim=1).values
    denom = torch.maximum(a, b)
    s = torch.where(denom > 0, (b - a) / denom.clamp_min(1e-300), torch.zeros_like(a))
    s = torch.where(own > 1, s, torch.zeros_like(s))
    return float(s.mean())


def mean_pairwise_distance(z: Tensor) -> float:
    """Mean L2 distance over distinct pairs i < j ("encoding space size"). z [N, D]."""
    z = _check_z(z)
    return float(torch.pdist(z, p=2).mean())


def effective_rank(z: Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) of the centred z [N, D].

    exp(H(p)) with p = s / sum(s) over the singular values s of z - mean(z).
    Lies in [1, min(N, D)] normally; defined as 0.0 for a collapsed
    representation (all singular values ~0, e.g. all rows identical).
    """
    z = _check_z(z)
    zc = z - z.mean(0, keepdim=True)
    s = torch.linalg.svdvals(zc)
    scale = max(1.0, float(z.abs().max()))
    if float(s.max()) <= 1e-9 * scale:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def representation_metrics(z: Tensor, labels: Tensor) -> dict[str, float]:
    """All scalar metrics for z [N, D] and labels [N] as plain Python floats.

    Keys: centroid_acc, knn_acc (k=5), linear_probe_acc (defaults, seed 0),
    silhouette (NaN if < 2 labels), mean_pairwise_dist, effective_rank.
    """
    z, labels = _check(z, labels)
    return {
        "centroid_acc": nearest_centroid_accuracy(z, labels),
        "knn_acc": knn_accuracy(z, labels),
        "linear_probe_acc": linear_probe_accuracy(z, labels),
        "silhouette": silhouette_score(z, labels),
        "mean_pairwise_dist": mean_pairwise_distance(z),
        "effective_rank": effective_rank(z),
    }


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #
def _label_color(label: int) -> tuple[float, float, float, float]:
    """Fixed tab10 colour per count so colours agree across figures."""
    return to_rgba(f"C{int(label) % 10}")


def plot_pca(z: Tensor, labels: Tensor, title: str = "") -> Figure:
    """Scatter of the 2-D PCA projection of z [N, D], coloured by labels [N].

    Deterministic (full SVD of the centred z, sign fixed so each component's
    largest loading is positive). D == 1 or a rank-deficient / constant z gives
    zeros in the missing component(s).
    """
    z, labels = _check(z, labels)
    zc = z - z.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    k = min(2, vh.shape[0])
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = torch.zeros(z.shape[0], 2, dtype=torch.float64)
    proj[:, :k] = zc @ comps.T
    var = s.pow(2)
    total = float(var.sum())
    ratios = [float(var[i]) / total if (i < k and total > 0) else 0.0 for i in range(2)]

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    p = proj.numpy()
    lab = labels.numpy()
    handles = []
    for c in np.unique(lab):
        m = lab == c
        col = _label_color(c)
        ax.scatter(p[m, 0], p[m, 1], s=10, color=col, alpha=0.8, linewidths=0)
        handles.append(
            Line2D([], [], marker="o", linestyle="", color=col, label=f"count {int(c)}")
        )
    ax.legend(handles=handles, loc="best", fontsize=7, framealpha=0.7)
    ax.set_xlabel(f"PC1 ({100 * ratios[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ratios[1]:.1f}% var)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_distance_heatmap(z: Tensor, labels: Tensor, title: str = "") -> Figure:
    """Pairwise L2 distance matrix of z [N, D] with samples stably sorted by labels [N].

    Red lines mark label-block boundaries; ticks sit at block centres and show
    the count.
    """
    z, labels = _check(z, labels)
    order = torch.sort(labels, stable=True).indices
    zs, ls = z[order], labels[order]
    dist = _pairwise(zs).numpy()
    classes, counts = torch.unique(ls, sorted=True, return_counts=True)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    im = ax.imshow(dist, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="L2 distance")
    for e in ends[:-1].tolist():
        ax.axhline(e - 0.5, color="red", linewidth=0.8)
        ax.axvline(e - 0.5, color="red", linewidth=0.8)
    centres = ((starts + ends - 1).double() / 2).tolist()
    names = [str(int(c)) for c in classes.tolist()]
    ax.set_xticks(centres)
    ax.set_xticklabels(names)
    ax.set_yticks(centres)
    ax.set_yticklabels(names)
    ax.set_xlabel("count")
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _to_unit_originals(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> [0, 1]; float assumed in [0, 1] (or [0, 255] if max > 1), clipped."""
    if x.dtype == torch.uint8:
        return x.double() / 255.0
    x = x.double()
    if float(x.max()) > 1.0:
        x = x / 255.0
    return x.clamp(0.0, 1.0)


def plot_reconstructions(
    originals: Tensor,
    reconstructions: Tensor,
    labels: Tensor | None = None,
    n: int = 8,
) -> Figure:
    """Grid of the first n (original, reconstruction) pairs, up to 4 pairs per row.

    originals [B, C, H, W] (uint8 0..255, or float in [0, 1]), reconstructions
    [B, C, H, W] float in any range, C in {1, 3}; labels [B] optional (shown as
    "count c" titles). Each reconstruction is min/max normalised to [0, 1] on its
    own; a constant reconstruction is shown as uniform mid-grey (0.5).
    """
    orig = torch.as_tensor(originals).detach().cpu()
    rec = torch.as_tensor(reconstructions).detach().cpu()
    if orig.dim() != 4 or orig.shape[1] not in (1, 3):
        raise ValueError(f"originals must be [B, C, H, W] with C in (1, 3), got {tuple(orig.shape)}")
    if rec.shape != orig.shape:
        raise ValueError(
            f"reconstructions shape {tuple(rec.shape)} != originals shape {tuple(orig.shape)}"
        )
    rec = rec.double()
    if not torch.isfinite(rec).all():
        raise ValueError("reconstructions contain NaN or infinite values")
    b = orig.shape[0]
    if b < 1 or n < 1:
        raise ValueError(f"need at least one image and n >= 1 (B={b}, n={n})")
    lab = None if labels is None else _check_labels(labels, b)
    n = min(int(n), b)

    orig = _to_unit_originals(orig[:n])
    rec = rec[:n]
    lo = rec.amin(dim=(1, 2, 3), keepdim=True)
    hi = rec.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    rec = torch.where(span > 1e-12, (rec - lo) / span.clamp_min(1e-12), torch.full_like(rec, 0.5))

    pairs_per_row = min(n, 4)
    rows = math.ceil(n / pairs_per_row)
    cols = 2 * pairs_per_row
    fig = Figure(figsize=(1.6 * cols, 1.8 * rows))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, pairs_per_row)
        for j, (img, name) in enumerate(((orig[i], "orig"), (rec[i], "recon"))):
            ax = axes[r, 2 * c + j]
            arr = img.permute(1, 2, 0).numpy()
            if arr.shape[2] == 1:
                ax.imshow(arr[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(arr)
            if lab is not None and j == 0:
                name = f"{name} (count {int(lab[i])})"
            ax.set_title(name, fontsize=7)
    fig.tight_layout()
    return fig
