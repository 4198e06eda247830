"""Figures of a representation (cf. the paper's Fig. 2) and of its metrics against training updates.

Built with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend state); the caller
writes it, e.g. with :func:`save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA
from torch import Tensor

from agent.analysis.metrics import check, check_labels


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Lay ``fig`` out and write it to ``path`` (its folder made when missing)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _label_color(label: int) -> tuple[float, float, float, float]:
    """Fixed tab10 colour per count so colours agree across figures."""
    return to_rgba(f"C{int(label) % 10}")


def plot_pca(z: Tensor, labels: Tensor, title: str = "") -> Figure:
    """Scatter of the 2-D PCA projection of z [N, D], coloured by labels [N].

    scikit-learn's PCA (full SVD, deterministic signs). D == 1 gives zeros in
    the second component.
    """
    z, labels = check(z, labels)
    k = min(2, *z.shape)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant z: zero total variance
        pca = PCA(n_components=k, svd_solver="full").fit(z)
    p = np.zeros((z.shape[0], 2))
    p[:, :k] = pca.transform(z)
    ratios = [float(r) if np.isfinite(r) else 0.0 for r in pca.explained_variance_ratio_] + [0.0] * (2 - k)

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    lab = labels
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
    z, labels = check(z, labels)
    order = np.argsort(labels, kind="stable")
    zs = torch.from_numpy(z[order])
    dist = torch.cdist(zs, zs).fill_diagonal_(0.0).numpy()
    classes, counts = np.unique(labels[order], return_counts=True)
    ends = np.cumsum(counts)
    starts = ends - counts

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    im = ax.imshow(dist, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="L2 distance")
    for e in ends[:-1].tolist():
        ax.axhline(e - 0.5, color="red", linewidth=0.8)
        ax.axvline(e - 0.5, color="red", linewidth=0.8)
    centres = ((starts + ends - 1) / 2).tolist()
    names = [str(int(c)) for c in classes]
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
    lab = None if labels is None else check_labels(labels, b)
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


#: The reference code's in-sample nearest-centroid accuracy against updates (mean of its 6 committed
#: dense-reward counting runs; ``../shared/REFERENCE.md``, "The reference code's counting runs").
REFERENCE_CURVE = ((0, 0.38), (6_000, 0.57), (12_000, 0.67), (24_000, 0.84), (36_000, 0.92), (48_000, 0.96), (60_000, 0.99))

#: (column, label) of the accuracy panel of :func:`plot_repr_curves`.
ACCURACY_CURVES = (
    ("insample_centroid_acc", "centroid, in-sample (paper's)"),
    ("heldout_centroid_acc", "centroid, held-out"),
    ("heldout_knn_acc", "5-NN, held-out"),
    ("heldout_probe_acc", "linear probe, held-out"),
)


def plot_repr_curves(runs: dict[str, dict[str, list[float]]], reference: bool = True) -> Figure:
    """Representation metrics against updates, one colour per run.

    Args:
        runs: ``{label: {"step": [...], <metric>: [...]}}``, columns as in ``repr.csv``.
            One run: every accuracy of :data:`ACCURACY_CURVES` (line styles); several: the
            held-out centroid accuracy (solid) and the in-sample one (dotted) of each.
        reference: draw :data:`REFERENCE_CURVE` (dashed black) on the accuracy panel when the
            runs reach its first point past 0.
    Panels: accuracy, count clusters (and distinct counts, dotted), encoding size (log scale).
    """
    if not runs:
        raise ValueError("no runs to plot")
    fig = Figure(figsize=(13, 3.8))
    acc, clus, size = fig.subplots(1, 3)
    styles = ("-", "--", ":", "-.")
    single = len(runs) == 1
    for i, (label, cols) in enumerate(runs.items()):
        steps = cols["step"]
        color = f"C{i % 10}"
        shown = ACCURACY_CURVES if single else (ACCURACY_CURVES[1], ACCURACY_CURVES[0])
        for (key, name), ls in zip(shown, styles if single else ("-", ":")):
            if key in cols:
                acc.plot(steps, cols[key], ls, color=color if not single else f"C{styles.index(ls)}",
                         marker=".", label=name if single else f"{label}: {name}")  # fmt: skip
        if "count_clusters" in cols:
            clus.plot(steps, cols["count_clusters"], "-", color=color, marker=".", label=f"{label}: groups")
        if "distinct_counts" in cols:
            clus.plot(steps, cols["distinct_counts"], ":", color=color, marker=".", label=f"{label}: distinct")
        if "encoding_size" in cols:
            size.plot(steps, cols["encoding_size"], "-", color=color, marker=".", label=label)
    last = max(max(c["step"], default=0) for c in runs.values())
    if reference and last >= REFERENCE_CURVE[1][0]:
        ref = [p for p in REFERENCE_CURVE if p[0] <= last * 1.05] or list(REFERENCE_CURVE[:2])
        acc.plot(*zip(*ref), "k--", label="reference code, in-sample")
    acc.set_ylim(0, 1.02)
    acc.axhline(1 / 9, color="grey", lw=0.6)
    acc.set_ylabel("count accuracy")
    clus.set_ylim(0, 9.5)
    clus.set_ylabel("count clusters (dotted: distinct counts)")
    size.set_yscale("log")
    size.set_ylabel("encoding space size (mean pairwise L2)")
    for ax in (acc, clus, size):
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    acc.legend(fontsize=6)
    if not single:
        size.legend(fontsize=6)
    fig.tight_layout()
    return fig
