"""The networks: layers (``nets``), pixel encoders, the P-JEPA world model, TD-MPC2 heads and model, the decoder probe."""
