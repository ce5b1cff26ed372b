"""Where an artifact came from: the code version recorded in checkpoints, ONNX files and logs."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from rotation_dl import __version__


@functools.cache
def code_version() -> str:
    """`<package version>+<git commit>` of a source checkout, else the package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
        commit = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
