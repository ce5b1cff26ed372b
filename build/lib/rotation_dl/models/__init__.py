"""GRU networks, losses, the Lightning module and walk-forward training."""
