"""Selection, the backtest engine and metrics (one implementation used by every model)."""
