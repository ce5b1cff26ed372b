"""The data layer: vendor readers, validation, calendars and the canonical store (plus the
date x stock close matrix that its checks and the backtest share)."""
