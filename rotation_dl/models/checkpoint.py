"""Loading training checkpoints safely: weights only, refusals as one-line errors."""

from __future__ import annotations

from pathlib import Path

from rotation_dl.errors import CheckpointError


def safe_load_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True), its refusals turned into a one-line CheckpointError."""
    import pickle

    try:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise CheckpointError(f"{path}: no such checkpoint") from exc
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: the weights-only loader refuses this checkpoint ({first}); use "
            "checkpoints written by `rotation-dl train`, or retrain"
        ) from exc
