"""Drawing for the counting environment: shape stamps, non-overlapping placement, rendering.

All functions are vectorised over environments (numpy, no Python loop over envs); :func:`render_torch`
is :func:`render` in torch, for rendering on a GPU.
Object centres lie in ``[r, size - 1 - r]`` so every object is fully inside the frame.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.rng import StreamRNG

SHAPES = ("circle", "square", "triangle", "line")


def make_stamps(radius: int) -> np.ndarray:
    """Boolean masks of the four shapes in a ``(2r+1) x (2r+1)`` box: ``[4, 2r+1, 2r+1]``.

    circle: disc of radius r; square: the full box; triangle: apex up, base the full bottom row;
    line: horizontal bar, full width, 2 pixels thick.
    """
    side = 2 * radius + 1
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    circle = dx**2 + dy**2 <= radius**2
    square = np.ones((side, side), dtype=bool)
    row = dy + radius  # 0 at the top row, 2r at the bottom
    triangle = np.abs(dx) <= row / 2
    line = (dy == 0) | (dy == 1)
    return np.stack([circle, square, triangle, line])


def place_objects(
    rng: StreamRNG,
    idx: np.ndarray,
    max_objects: int,
    radius: int,
    size: int,
    tries: int = 50,
) -> np.ndarray:
    """Sample ``max_objects`` non-overlapping centres for each env in ``idx``.

    Slots are filled in order; each slot takes the first of ``tries`` uniform candidates (drawn 8
    first, the rest only where those 8 all collide) whose bounding box stays at least one pixel
    away from every earlier slot's box (Chebyshev centre distance >= 2r+2), so objects never touch
    and can be counted. Envs where some slot found no free candidate are re-drawn, up to 20 rounds.

    Nearly every env fills every slot from its first 8 candidates: for those, all slots' candidates are
    drawn in one go (the same draws, in the same order, as slot by slot). The rest are rewound to where
    they started and placed slot by slot (:func:`_place_slotwise`), so each env gets the same centres and
    ends at the same stream position either way (tested).

    Returns:
        int64 ``[len(idx), max_objects, 2]`` centres as ``(y, x)``.
    """
    first = min(8, tries)
    start = rng.counters[idx].copy()
    cy, cx = _centres(rng.bits(idx, first * max_objects), radius, size)  # [M, K * first]: slot k's are k*first..
    cy, cx = cy.reshape(len(idx), max_objects, first), cx.reshape(len(idx), max_objects, first)
    pos = np.zeros((len(idx), max_objects, 2), dtype=np.int32)
    ok, rows = np.ones(len(idx), dtype=bool), np.arange(len(idx))
    for k in range(max_objects):
        free = _clear_of(cy[:, k], cx[:, k], pos[:, :k], radius)
        ok &= free.any(-1)
        pick = free.argmax(-1)
        pos[:, k, 0], pos[:, k, 1] = cy[rows, k, pick], cx[rows, k, pick]
    out = pos.astype(np.int64)
    slow = np.flatnonzero(~ok)
    if len(slow):
        rng.counters[idx[slow]] = start[slow]
        out[slow] = _place_slotwise(rng, idx[slow], max_objects, radius, size, tries)
    return out


def _place_slotwise(rng: StreamRNG, idx: np.ndarray, max_objects: int, radius: int, size: int, tries: int) -> np.ndarray:
    """:func:`place_objects` slot by slot: each slot's 8 candidates, then its other ``tries - 8`` where those
    all collide; envs where a slot found none are re-drawn, up to 20 rounds."""
    out = np.zeros((len(idx), max_objects, 2), dtype=np.int64)
    todo = np.arange(len(idx))
    first_tries = min(8, tries)
    for _ in range(20):
        if len(todo) == 0:
            return out
        envs = idx[todo]
        pos = np.zeros((len(envs), max_objects, 2), dtype=np.int32)
        ok = np.ones(len(envs), dtype=bool)
        for k in range(max_objects):
            # Most envs find a free spot among a few candidates; only the rest draw the other tries.
            cand, free = _candidates(rng, envs, pos[:, :k], first_tries, radius, size)
            found = free.any(-1)
            pick = cand[np.arange(len(envs)), free.argmax(-1)]
            retry = np.flatnonzero(~found)
            if len(retry) and tries > first_tries:
                cand2, free2 = _candidates(rng, envs[retry], pos[retry, :k], tries - first_tries, radius, size)
                found[retry] = free2.any(-1)
                pick[retry] = cand2[np.arange(len(retry)), free2.argmax(-1)]
            ok &= found
            pos[:, k] = pick
        out[todo[ok]] = pos[ok]
        todo = todo[~ok]
    if len(todo):
        raise RuntimeError(f"could not place {max_objects} non-overlapping objects of radius {radius} in {size}x{size}")
    return out


def _candidates(
    rng: StreamRNG, envs: np.ndarray, placed: np.ndarray, n: int, radius: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform candidate centres per env and whether each keeps clear of ``placed``.

    Returns:
        candidates int32 ``[M, n, 2]`` and free bool ``[M, n]``.
    """
    cy, cx = _centres(rng.bits(envs, n), radius, size)
    return np.stack([cy, cx], axis=-1), _clear_of(cy, cx, placed, radius)


def _centres(bits: np.ndarray, radius: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate centres ``(y, x)``, int32 shaped like the raw draws ``bits``: the high and low 32 bits of each."""
    span = np.uint64(size - 2 * radius)
    cy = ((bits >> np.uint64(32)) % span).astype(np.int32) + radius
    cx = ((bits & np.uint64(0xFFFFFFFF)) % span).astype(np.int32) + radius
    return cy, cx


def _clear_of(cy: np.ndarray, cx: np.ndarray, placed: np.ndarray, radius: int) -> np.ndarray:
    """Whether each candidate ``cy, cx [M, n]`` keeps clear of every centre in ``placed [M, k, 2]``: bool ``[M, n]``."""
    if placed.shape[1] == 0:
        return np.ones(cy.shape, dtype=bool)
    gap = 2 * radius + 2
    far_y = np.abs(cy[:, :, None] - placed[:, None, :, 0]) >= gap
    far_x = np.abs(cx[:, :, None] - placed[:, None, :, 1]) >= gap
    return (far_y | far_x).all(-1)


def render(
    count: np.ndarray,
    shape: np.ndarray,
    color: np.ndarray,
    pos: np.ndarray,
    stamps: np.ndarray,
    size: int,
) -> np.ndarray:
    """Draw the first ``count[i]`` objects of every env on a black background.

    Args:
        count: int64 ``[M]`` objects shown per env.
        shape: int64 ``[M]`` index into ``stamps``.
        color: uint8 ``[M, 3]`` RGB colour per env.
        pos: int64 ``[M, K, 2]`` object centres ``(y, x)``.
        stamps: bool ``[S, 2r+1, 2r+1]`` shape masks.
        size: frame side.

    Returns:
        uint8 ``[M, 3, size, size]`` frames, channels first.
    """
    m, k_max = pos.shape[:2]
    radius = stamps.shape[-1] // 2
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    offsets = (dy * size + dx).reshape(-1)  # [P]
    centre = pos[..., 0] * size + pos[..., 1]  # [M, K]
    flat = centre[:, :, None] + offsets[None, None, :] + (np.arange(m) * size * size)[:, None, None]
    drawn = stamps.reshape(len(stamps), -1)[shape][:, None, :] & (np.arange(k_max)[None, :] < count[:, None])[:, :, None]
    canvas = np.zeros(m * size * size, dtype=np.uint8)
    canvas[flat[drawn]] = 1
    canvas = canvas.reshape(m, 1, size, size)
    return canvas * color[:, :, None, None]


def render_torch(count: torch.Tensor, shape: torch.Tensor, color: torch.Tensor, pos: torch.Tensor, stamps: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`render` in torch, on the inputs' device (a GPU renders there): the same frames, bit for bit.

    Args: as :func:`render`, as tensors on one device (``stamps`` bool ``[S, 2r+1, 2r+1]``).
    Returns: uint8 ``[M, 3, size, size]``.
    """
    m, k_max = pos.shape[:2]
    radius = stamps.shape[-1] // 2
    dev = pos.device
    r = torch.arange(-radius, radius + 1, device=dev)
    offsets = (r[:, None] * size + r[None, :]).reshape(-1)  # [P], row-major as np.mgrid
    centre = pos[..., 0] * size + pos[..., 1]  # [M, K]
    flat = centre[:, :, None] + offsets[None, None, :] + (torch.arange(m, device=dev) * size * size)[:, None, None]
    shown = torch.arange(k_max, device=dev)[None, :] < count[:, None]  # [M, K]
    drawn = stamps.reshape(len(stamps), -1)[shape][:, None, :] & shown[:, :, None]
    canvas = torch.zeros(m * size * size, dtype=torch.uint8, device=dev)
    canvas[flat[drawn]] = 1
    return canvas.reshape(m, 1, size, size) * color[:, :, None, None]
