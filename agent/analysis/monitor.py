"""The paper's monitoring set, a held-out set from other seeds, and the analysis of a model on them.

Files: ``metrics.json`` + ``pca.png``, ``heatmap.png``, ``reconstructions.png`` per analysis; over a run,
``repr.csv`` (one row of metrics per analysed step) summarised into ``analysis/curves.png`` and the
``final`` / ``best`` entries of ``analysis/metrics.json``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict
from torch import Tensor

from agent.analysis import (
    METRIC_KEYS,
    plot_distance_heatmap,
    plot_pca,
    plot_reconstructions,
    plot_repr_curves,
    representation_metrics,
)
from agent.analysis.bisim import counting_mdp, largest_bisimulation, unhealthy_collapse
from agent.models.probe import DecoderProbe
from envs.counting import CountingEnv

FIGURES = ("pca.png", "heatmap.png", "reconstructions.png")
BEST_BY = "heldout_centroid_acc"  # the metric that picks the best step of a run
LabelledSet = tuple[Tensor, Tensor]


def monitoring_set(task: dict | None = None, n: int = 256, seed: int = 42) -> LabelledSet:
    """``n`` observations labelled by count, as in the paper.

    Env ``i`` is reset with seed ``seed + i`` and takes 3..5 uniform random actions (drawn from a
    generator seeded with ``seed``); its frame after those actions is kept. The held-out set is
    the same recipe from other seeds (``analysis.heldout_seed``).

    Returns:
        ``pixels`` uint8 ``[n, 3, 64, 64]`` and ``count`` int64 ``[n]``.
    """
    task = dict(task or {})
    kwargs = {k: task[k] for k in ("target", "action_mode", "reward_type", "max_objects", "radius", "size") if k in task}
    env = CountingEnv(batch_size=(n,), seed=seed, max_steps=10, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    n_actions = torch.randint(3, 6, (n,), generator=gen)
    actions = torch.rand(5, n, 1, generator=gen) * 2 - 1
    td = env.reset()
    pixels, counts = td["pixels"].clone(), td["count"].clone()
    for t in range(5):
        nxt = env.step(TensorDict({"action": actions[t]}, batch_size=(n,)))["next"]
        keep = n_actions == t + 1
        pixels[keep], counts[keep] = nxt["pixels"][keep], nxt["count"][keep]
    return pixels, counts


def check_analysis(analysis: dict) -> None:
    """Raise a ``ValueError`` when the monitoring and held-out sets are too small or share seeds."""
    n, seed = int(analysis["num_obs"]), int(analysis["seed"])
    n_out, seed_out = int(analysis["heldout_num_obs"]), int(analysis["heldout_seed"])
    if n < 2 or n_out < 2:
        raise ValueError(f"analysis.num_obs and analysis.heldout_num_obs must be >= 2, got {n} and {n_out}")
    if seed < seed_out + n_out and seed_out < seed + n:
        raise ValueError(
            f"the held-out seeds {seed_out}..{seed_out + n_out - 1} overlap the monitoring seeds {seed}..{seed + n - 1}; "
            "move analysis.heldout_seed"
        )


def analysis_sets(task: dict, analysis: dict) -> tuple[LabelledSet, LabelledSet]:
    """The monitoring and held-out sets an ``analysis`` config describes (checked by :func:`check_analysis`)."""
    check_analysis(analysis)
    a = {k: int(analysis[k]) for k in ("num_obs", "seed", "heldout_num_obs", "heldout_seed")}
    return monitoring_set(task, a["num_obs"], a["seed"]), monitoring_set(task, a["heldout_num_obs"], a["heldout_seed"])


def analyse(
    encode: Callable[[Tensor], Tensor],
    monitor: LabelledSet,
    heldout: LabelledSet,
    out_dir: str | Path,
    decode: Callable[[Tensor], Tensor] | None = None,
    title: str = "",
    extra: dict[str, float | None] | None = None,
    task: dict | None = None,
) -> dict[str, float | None]:
    """Metrics and figures of ``encode`` written to ``out_dir``.

    Args:
        encode: uint8 ``[N, 3, 64, 64]`` -> latents ``[N, D]`` (no augmentation).
        monitor, heldout: ``(pixels, counts)``: figures and in-sample metrics on ``monitor``,
            classifiers fitted there and scored on ``heldout`` (:func:`representation_metrics`).
        decode: CPU latents -> reconstructions in [-1, 1] (the decoder probe), optional.
        extra: more metrics to report with these (e.g. the theorem's premise residuals).
        task: the counting task's settings (``max_objects``, ``target``, ``reward_type``), for the
            bisimulation classes of ``unhealthy_collapse``; None: the defaults.
    Returns:
        the metrics written to ``out_dir/metrics.json`` (plus ``decoder_mse`` when ``decode``;
        NaN written as null).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (pixels, counts), (pixels_out, counts_out) = monitor, heldout
    with torch.no_grad():
        z = encode(pixels).float().cpu()
        z_out = encode(pixels_out).float().cpu()
        metrics: dict[str, float | None] = dict(representation_metrics(z, counts, z_out, counts_out))
        classes = count_classes(task)[counts_out.numpy()]
        repeated = len(set(classes.tolist())) < len(classes)  # a same-class pair to measure against (a tiny set may lack one)
        metrics["unhealthy_collapse"] = unhealthy_collapse(z_out.numpy(), classes) if repeated else None
        metrics.update(extra or {})
        recon = None
        if decode is not None:
            recon = decode(z).float().cpu()
            metrics["decoder_mse"] = float((recon - DecoderProbe.target(pixels)).pow(2).mean())
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    for name, fig in (("pca.png", plot_pca(z, counts, title)), ("heatmap.png", plot_distance_heatmap(z, counts, title))):
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
    if recon is not None:
        plot_reconstructions(pixels, recon, counts, n=8).savefig(out / "reconstructions.png", dpi=110, bbox_inches="tight")
    (out / "metrics.json").write_text(json.dumps({**metrics, "num_obs": len(counts), "heldout_num_obs": len(counts_out)}, indent=2))
    return metrics


def count_classes(task: dict | None = None):
    """The bisimulation class of each count on the counting MDP with its reward as the auxiliary.

    (Proposition 1: one class per count; computed from the task's settings, not assumed.)
    """
    t = task or {}
    mdp = counting_mdp(int(t.get("max_objects", 8)), int(t.get("target", 4)), str(t.get("reward_type", "sparse")))
    return largest_bisimulation(*mdp)


def read_curve(path: str | Path) -> dict[str, list[float]]:
    """Columns of a ``repr.csv`` (``step`` and the metrics; empty cells as NaN), rows sorted by step."""
    with Path(path).open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["step"]))
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols: dict[str, list[float]] = {k: [] for k in rows[0]}
    for r in rows:
        for k in cols:
            cols[k].append(float(r[k]) if r.get(k) not in (None, "") else math.nan)
    cols["step"] = [int(s) for s in cols["step"]]
    return {k.removeprefix("repr/"): v for k, v in cols.items()}


def summarise(curve: dict[str, list[float]], out_dir: str | Path, label: str = "run") -> dict:
    """``curves.png`` and ``{"final", "best"}`` (best by :data:`BEST_BY`) from a run's curve, into ``out_dir``.

    Returns the summary also written into ``out_dir/metrics.json`` beside the final analysis's metrics.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_repr_curves({label: curve}).savefig(out / "curves.png", dpi=110, bbox_inches="tight")

    def row(i: int) -> dict:
        return {"step": curve["step"][i], **{k: (None if math.isnan(v[i]) else v[i]) for k, v in curve.items() if k != "step"}}

    scores = [(-math.inf if math.isnan(v) else v) for v in curve[BEST_BY]]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the earliest of equal scores
    summary = {"final": row(len(scores) - 1), "best": {"by": BEST_BY, **row(best)}}
    path = out / "metrics.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**{k: v for k, v in current.items() if k not in summary}, **summary}, indent=2))
    return summary


__all__ = ["BEST_BY", "FIGURES", "METRIC_KEYS", "analyse", "analysis_sets", "check_analysis", "monitoring_set", "read_curve", "summarise"]
