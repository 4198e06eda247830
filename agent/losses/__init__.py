"""Losses: P-JEPA (dynamics + auxiliary, with gradient routing) and TD-MPC2's (reward, value, termination, policy)."""
