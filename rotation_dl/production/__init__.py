"""The weekly production cycle's records: the model registry, the score history and the live
monitor. Append-only Delta tables and pure functions over polars frames; no torch."""
