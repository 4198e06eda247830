"""How well latents encode the object count: in-sample (the paper's) and held-out metrics.

The paper reports nearest-centroid accuracy fitted and scored on the same 256 monitoring
observations. In 256 dimensions that is high even for untrained features, so the held-out metrics
fit on the monitoring set and score on a second set rendered from other seeds. scikit-learn does
the classifiers, k-means, the adjusted Rand index and the silhouette.

Inputs are ``z [N, D]`` latents and ``labels [N]`` non-negative integer counts (torch tensors or
arrays); outputs are plain Python floats. Nothing here touches the global RNGs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics import silhouette_score as _sk_silhouette
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

#: Keys of :func:`representation_metrics`, in order.
METRIC_KEYS = (
    "insample_centroid_acc",
    "heldout_centroid_acc",
    "heldout_knn_acc",
    "heldout_probe_acc",
    "count_clusters",
    "distinct_counts",
    "kmeans_ari",
    "silhouette",
    "encoding_size",
    "effective_rank",
)


# --------------------------------------------------------------------------- validation
def check_z(z: Tensor | np.ndarray) -> np.ndarray:
    """Validate ``z [N, D]`` (N >= 2, D >= 1, real, finite); return a float64 numpy copy."""
    t = torch.as_tensor(z)
    if t.dim() != 2:
        raise ValueError(f"z must be 2-D [N, D], got shape {tuple(t.shape)}")
    n, d = t.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples, got N={n}")
    if d < 1:
        raise ValueError("z must have at least one feature (D >= 1)")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"z must be real-valued, got dtype {t.dtype}")
    out = t.detach().to("cpu", torch.float64).numpy().copy()
    if not np.isfinite(out).all():
        raise ValueError("z contains NaN or infinite values")
    return out


def check_labels(labels: Tensor | np.ndarray, n: int) -> np.ndarray:
    """Validate ``labels [N]`` (non-negative integers, N == n); return an int64 numpy copy."""
    t = torch.as_tensor(labels)
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"length mismatch: z has N={n} rows, labels has {t.shape[0]}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"labels must have an integer dtype, got {t.dtype}")
    out = t.detach().to("cpu", torch.int64).numpy().copy()
    if (out < 0).any():
        raise ValueError("labels must be non-negative integers (object counts)")
    return out


def check(z, labels) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_z` and :func:`check_labels` together."""
    zc = check_z(z)
    return zc, check_labels(labels, zc.shape[0])


def _scale(z: np.ndarray) -> np.ndarray:
    """``z`` divided by its largest absolute value (classifiers and k-means are scale-free; this
    keeps a near-collapsed latent, spread ~1e-6, out of their numerical tolerances)."""
    m = float(np.abs(z).max())
    return z / m if m > 0 else z


# --------------------------------------------------------------------------- metrics
def _centroid_score(z_fit: np.ndarray, y_fit: np.ndarray, z_eval: np.ndarray, y_eval: np.ndarray) -> float:
    """Nearest-centroid accuracy; a fully collapsed fit set (every row equal) predicts its smallest count."""
    if len(np.unique(y_fit)) < 2 or np.ptp(z_fit, axis=0).max() == 0:
        return float((y_eval == y_fit.min()).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a feature constant within a count
        return float(NearestCentroid().fit(z_fit, y_fit).score(z_eval, y_eval))


def insample_centroid_accuracy(z, labels) -> float:
    """The paper's metric: nearest-centroid count accuracy fitted and scored on the same points."""
    z, labels = check(z, labels)
    return _centroid_score(z, labels, z, labels)


def heldout_accuracies(z_fit, y_fit, z_eval, y_eval, k: int = 5) -> dict[str, float]:
    """Classifiers fitted on ``(z_fit, y_fit)``, accuracy on ``(z_eval, y_eval)``.

    Returns ``heldout_centroid_acc`` (nearest centroid), ``heldout_knn_acc`` (k-NN majority vote,
    ``k`` capped at the fit size) and ``heldout_probe_acc`` (standardised multinomial logistic
    regression, L2 with C=1, lbfgs). A count absent from the fit set is never predicted.
    """
    z_fit, y_fit = check(z_fit, y_fit)
    z_eval, y_eval = check(z_eval, y_eval)
    if z_fit.shape[1] != z_eval.shape[1]:
        raise ValueError(f"fit and eval latents differ in size: {z_fit.shape[1]} vs {z_eval.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scale = float(np.abs(z_fit).max()) or 1.0
    z_fit, z_eval = z_fit / scale, z_eval / scale
    if len(np.unique(y_fit)) < 2:  # one class: every classifier predicts it
        acc = float((y_eval == y_fit[0]).mean())
        return {"heldout_centroid_acc": acc, "heldout_knn_acc": acc, "heldout_probe_acc": acc}
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y_fit)))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(z_fit, y_fit)
    return {
        "heldout_centroid_acc": _centroid_score(z_fit, y_fit, z_eval, y_eval),
        "heldout_knn_acc": float(knn.fit(z_fit, y_fit).score(z_eval, y_eval)),
        "heldout_probe_acc": float(probe.score(z_eval, y_eval)),
    }


def count_clusters(z, labels) -> tuple[int, int]:
    """How many groups the counts form, and how many counts stand alone.

    Each count ``c`` has a centroid ``mu_c`` and a spread ``s_c`` (RMS distance of its points to
    ``mu_c``). Two counts are joined when ``||mu_c - mu_c'|| <= max(s_c, s_c')``: one of them lies
    within the other's spread. Returns ``(groups, distinct)``: the connected components of that
    graph, and the counts alone in theirs (farther from every other centroid than either spread).
    Nine well separated counts give ``(9, 9)``; one blob gives ``(1, 0)``.
    """
    z, labels = check(z, labels)
    classes = np.unique(labels)
    mu = np.stack([z[labels == c].mean(0) for c in classes])
    spread = np.array([math.sqrt(((z[labels == c] - m) ** 2).sum(1).mean()) for c, m in zip(classes, mu)])
    dist = np.sqrt(((mu[:, None] - mu[None]) ** 2).sum(-1))
    joined = dist <= np.maximum(spread[:, None], spread[None])
    parent = list(range(len(classes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(joined)):
        parent[root(i)] = root(j)
    roots = [root(i) for i in range(len(classes))]
    sizes = {r: roots.count(r) for r in set(roots)}
    return len(sizes), sum(1 for r in roots if sizes[r] == 1)


def kmeans_ari(z, labels, seed: int = 0) -> float:
    """Adjusted Rand index between k-means (k = number of counts present, 10 restarts) and the counts."""
    z, labels = check(z, labels)
    k = len(np.unique(labels))
    if k < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than k
        pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(_scale(z))
    return float(adjusted_rand_score(labels, pred))


def silhouette(z, labels) -> float:
    """Mean silhouette coefficient by count (L2); NaN when fewer than two counts are present."""
    z, labels = check(z, labels)
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return float("nan")
    return float(_sk_silhouette(_scale(z), labels, metric="euclidean"))


def mean_pairwise_distance(z) -> float:
    """Mean L2 distance over distinct pairs i < j (the paper's "encoding space size")."""
    t = torch.from_numpy(check_z(z))
    return float(torch.pdist(t, p=2).mean())


def effective_rank(z) -> float:
    """Effective rank (Roy & Vetterli 2007) of the centred ``z``: ``exp(H(s / sum s))`` over its
    singular values; 0.0 for a collapsed representation (all singular values ~0)."""
    z = check_z(z)
    s = np.linalg.svd(z - z.mean(0, keepdims=True), compute_uv=False)
    if float(s.max()) <= 1e-9 * max(1.0, float(np.abs(z).max())):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def representation_metrics(z_fit, y_fit, z_eval, y_eval) -> dict[str, float]:
    """Every metric of :data:`METRIC_KEYS` as plain floats (``silhouette`` may be NaN).

    ``z_fit, y_fit``: the monitoring set (in-sample metric, encoding size, effective rank; the
    classifiers are fitted here). ``z_eval, y_eval``: the held-out set (classifier accuracy, count
    clusters, k-means agreement, silhouette).
    """
    z_fit, y_fit = check(z_fit, y_fit)
    z_eval, y_eval = check(z_eval, y_eval)
    groups, distinct = count_clusters(z_eval, y_eval)
    out = {
        "insample_centroid_acc": insample_centroid_accuracy(z_fit, y_fit),
        **heldout_accuracies(z_fit, y_fit, z_eval, y_eval),
        "count_clusters": float(groups),
        "distinct_counts": float(distinct),
        "kmeans_ari": kmeans_ari(z_eval, y_eval),
        "silhouette": silhouette(z_eval, y_eval),
        "encoding_size": mean_pairwise_distance(z_fit),
        "effective_rank": effective_rank(z_fit),
    }
    return {k: out[k] for k in METRIC_KEYS}
