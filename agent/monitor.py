"""The paper's monitoring set and the analysis of a model on it (metrics.json + three figures)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor

from agent.analysis import plot_distance_heatmap, plot_pca, plot_reconstructions, representation_metrics
from envs.counting import CountingEnv

FIGURES = ("pca.png", "heatmap.png", "reconstructions.png")


def monitoring_set(task: dict | None = None, n: int = 256, seed: int = 42) -> tuple[Tensor, Tensor]:
    """``n`` observations labelled by count, as in the paper.

    Env ``i`` is reset with seed ``seed + i`` and takes 3..5 uniform random actions (drawn from a
    generator seeded with ``seed``); its frame after those actions is kept.

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


def analyse(
    encode: Callable[[Tensor], Tensor],
    pixels: Tensor,
    counts: Tensor,
    out_dir: str | Path,
    decode: Callable[[Tensor], Tensor] | None = None,
    title: str = "",
) -> dict[str, float]:
    """Metrics and figures of ``encode`` on a labelled set, written to ``out_dir``.

    Args:
        encode: uint8 ``[N, 3, 64, 64]`` -> latents ``[N, D]`` (no augmentation).
        decode: CPU latents -> reconstructions in [-1, 1] (the decoder probe), optional.
    Returns:
        the metrics written to ``out_dir/metrics.json`` (plus ``decoder_mse`` when ``decode``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        z = encode(pixels).float().cpu()
        metrics = representation_metrics(z, counts)
        recon = None
        if decode is not None:
            recon = decode(z).float().cpu()
            metrics["decoder_mse"] = float((recon - (pixels.float() / 127.5 - 1)).pow(2).mean())
    metrics = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}
    metrics["num_obs"] = int(len(counts))
    for name, fig in (("pca.png", plot_pca(z, counts, title)), ("heatmap.png", plot_distance_heatmap(z, counts, title))):
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
    if recon is not None:
        plot_reconstructions(pixels, recon, counts, n=8).savefig(out / "reconstructions.png", dpi=110, bbox_inches="tight")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
