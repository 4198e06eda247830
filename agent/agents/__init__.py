"""Agents: one optimiser-step skeleton (``update``), the P-JEPA and TD-MPC2 agents on it, and the factory that builds, signs and loads either."""
