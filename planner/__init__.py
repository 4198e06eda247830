"""Latent-space planners (MPPI) that depend only on a small world-model protocol."""
