"""rotation_dl: deep-learning industry rotation on minute bars (GRU, ONNX, diffusion baseline)."""

from __future__ import annotations

__version__ = "0.1.0"
