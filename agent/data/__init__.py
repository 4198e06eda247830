"""Data: the paper's random-action policy and the torchrl collector (collection), the replay buffer of both jobs (buffer)."""
