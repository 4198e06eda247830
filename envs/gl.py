"""The OpenGL backend for MuJoCo rendering, chosen before dm_control or mujoco is first imported.

dm_control and mujoco read ``MUJOCO_GL`` once, at import; a headless machine without it fails to
render DMC pixel tasks. :func:`choose_gl_backend` runs when ``agent`` or ``envs`` is imported.
"""

from __future__ import annotations

import os

BACKENDS = ("egl", "osmesa", "glfw")


def choose_gl_backend() -> str | None:
    """Keep a ``MUJOCO_GL`` the user set; on a machine with no display, set ``egl``; returns the choice.

    With a display (``DISPLAY`` / ``WAYLAND_DISPLAY``) nothing is set and MuJoCo uses its window
    backend (glfw). Without a GPU driver EGL runs on Mesa's software renderer; ``MUJOCO_GL=osmesa``
    is the other headless choice.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    os.environ["MUJOCO_GL"] = "egl"
    return "egl"
