"""P-JEPA world model, heads, losses and the training agent."""
