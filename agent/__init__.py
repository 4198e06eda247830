"""P-JEPA world model, heads, losses and the training agent."""

from envs.gl import choose_gl_backend

choose_gl_backend()  # before anything imports mujoco or dm_control
