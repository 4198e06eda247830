"""Representation analysis: count metrics (in-sample and held-out) and figures (pure: no env, no model)."""

from agent.analysis.figures import (
    REFERENCE_CURVE,
    plot_distance_heatmap,
    plot_pca,
    plot_reconstructions,
    plot_repr_curves,
)
from agent.analysis.metrics import (
    METRIC_KEYS,
    count_clusters,
    effective_rank,
    heldout_accuracies,
    insample_centroid_accuracy,
    kmeans_ari,
    mean_pairwise_distance,
    representation_metrics,
    silhouette,
)

__all__ = [
    "METRIC_KEYS",
    "REFERENCE_CURVE",
    "count_clusters",
    "effective_rank",
    "heldout_accuracies",
    "insample_centroid_accuracy",
    "kmeans_ari",
    "mean_pairwise_distance",
    "plot_distance_heatmap",
    "plot_pca",
    "plot_reconstructions",
    "plot_repr_curves",
    "representation_metrics",
    "silhouette",
]
