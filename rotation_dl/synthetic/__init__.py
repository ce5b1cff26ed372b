"""Synthetic markets with planted signals: a stock-level sample market and a sector-series
market."""
