"""Data: the paper's random-action policy, the torchrl collector and the slice replay buffer, time-major batches."""
