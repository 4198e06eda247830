"""The paper's theorem made measurable: bisimulation classes of a finite MDP, and how an encoder treats them.

Theorem (No Unhealthy Representation Collapse): in a deterministic MDP, if ``T(E(o), a) = E(f(o, a))``
and ``P(E(o)) = p(o)`` for all ``o, a``, observations that are not bisimilar (largest bisimulation
with respect to the transitions and the auxiliary values ``p``) map to distinct latents.

- :func:`largest_bisimulation`: the classes of a finite deterministic MDP given by its transition
  table and auxiliary values, by partition refinement.
- :func:`counting_mdp`: the counting task's abstract MDP (counts 0..8, add / remove).
- :func:`unhealthy_collapse`: the conclusion, measured: how many pairs from different classes sit
  closer in latent space than a fraction of the mean pair distance.
- :func:`premise_residuals`: the premises, measured on real transitions.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from envs.counting import REWARD_TYPES, count_reward


def largest_bisimulation(transitions: np.ndarray, aux: np.ndarray | None = None, decimals: int = 9) -> np.ndarray:
    """Class labels ``[S]`` (0..k-1, in order of first appearance) of the largest bisimulation.

    Args:
        transitions: ``[S, A]`` integers, ``transitions[s, a]`` the state reached from ``s`` by ``a``.
        aux: ``[S]`` or ``[S, d]`` auxiliary values ``p(s)``; states start in one class per distinct
            value (rounded to ``decimals``). None: no auxiliary, all states start together.
    Raises:
        ValueError: a table that is not ``[S, A]`` integers, a successor outside ``0..S-1``, or
            auxiliary values whose length is not ``S``.
    """
    t = np.asarray(transitions)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"transitions must be a non-empty [states, actions] integer table, got shape {t.shape} of {t.dtype}")
    n = t.shape[0]
    if t.min() < 0 or t.max() >= n:
        bad = np.argwhere((t < 0) | (t >= n))[0]
        raise ValueError(f"action {bad[1]} leads state {bad[0]} to {t[tuple(bad)]}, outside the state set 0..{n - 1}")
    if aux is None:
        labels = np.zeros(n, dtype=np.int64)
    else:
        values = np.asarray(aux, dtype=np.float64).reshape(len(aux), -1) if np.ndim(aux) else np.empty((0, 1))
        if values.shape[0] != n:
            raise ValueError(f"aux has {values.shape[0]} values for {n} states")
        labels = _relabel([tuple(v) for v in np.round(values, decimals)])
    while True:
        keys = [(labels[s], *labels[t[s]]) for s in range(n)]
        refined = _relabel(keys)
        if refined.max() == labels.max():  # refinement only splits: same count = stable
            return refined
        labels = refined


def _relabel(keys: list) -> np.ndarray:
    """Class ids 0..k-1 by first appearance of each distinct key."""
    ids: dict = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def counting_mdp(max_objects: int = 8, target: int = 4, reward_type: str = "sparse") -> tuple[np.ndarray, np.ndarray]:
    """The counting task's abstract MDP: states = counts ``0..max_objects``, actions (add, remove).

    Returns ``(transitions [S, 2], aux [S])`` with the auxiliary value of the reward of the current
    observation (``sparse``: 1 at the target; ``dense``: ``1 - |count - target| / max_objects``, +1
    at the target), as the environment defines it.
    """
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
    counts = np.arange(max_objects + 1)
    transitions = np.stack([np.minimum(counts + 1, max_objects), np.maximum(counts - 1, 0)], axis=1)
    return transitions, np.asarray(count_reward(counts, target, max_objects, reward_type), dtype=np.float64)


def unhealthy_collapse(z: np.ndarray, classes: np.ndarray) -> float:
    """Fraction of pairs from different classes no farther apart than the median same-class pair.

    ``z [N, D]``, ``classes [N]``. The encoder's own resolution is the yardstick: two observations
    the MDP tells apart count as merged when their latents are as close as typical observations of
    one class are. 0: every pair of classes is kept apart (what the theorem promises once its
    premises hold); ~0.5: no class structure at all; 1: everything at one point. Scale-free: a
    uniformly shrunk latent scores what it did before shrinking (a threshold relative to the mean
    or median of all pairs is not, and calls a structureless but shrunk latent healthy).

    Raises:
        ValueError: no class has two observations (no same-class pair to measure against).
    """
    classes = np.asarray(classes)
    zt = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    d = torch.cdist(zt, zt).numpy()
    upper = np.triu(np.ones_like(d, dtype=bool), k=1)
    same = classes[:, None] == classes[None, :]
    if not (upper & same).any():
        raise ValueError("unhealthy_collapse needs two observations of some class (a same-class pair)")
    different = upper & ~same
    if not different.any():
        return 0.0
    return float((d[different] <= np.median(d[upper & same])).mean())


def class_agreement(z: np.ndarray, classes: np.ndarray, seed: int = 0) -> float:
    """Adjusted Rand index of k-means (k = number of classes) on ``z`` against the classes."""
    k = len(np.unique(classes))
    if k < 2:
        return 1.0
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(z, dtype=np.float64))
    return float(adjusted_rand_score(classes, pred))


@torch.no_grad()
def premise_residuals(wm, aux_task, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, target: torch.Tensor | None) -> dict[str, float]:
    """The theorem's premises on real transitions ``(o, a, o')``, ``[N, ...]`` each.

    ``consistency_residual``: mean ``||T(E(o), a) - E(o')||`` relative to the mean ``||E(o')||``;
    ``aux_residual``: the aux head's loss on ``p(o)`` (None without an aux target).
    """
    z, z_next = wm.encode(obs), wm.encode(next_obs)
    pred = wm.next(z, action)
    scale = z_next.norm(dim=-1).mean().clamp_min(1e-8)
    out = {"consistency_residual": float((pred - z_next).norm(dim=-1).mean() / scale), "aux_residual": None}
    if target is not None and aux_task.active:
        out["aux_residual"] = float(aux_task.loss(z, target).mean())
    return out
