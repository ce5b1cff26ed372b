"""Self-describing ONNX files: metadata keys and the weights checksum (no torch needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rotation_dl.errors import ModelFileError

META_KEY = "rotation_dl"
CHECKSUM_KEY = "rotation_dl.weights_sha256"


def weights_checksum(model: Any) -> str:
    """sha256 over the graph's initializers (name, dims, raw bytes) in name order."""
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        arr = numpy_helper.to_array(init)
        h.update(init.name.encode())
        h.update(str(arr.shape).encode())
        h.update(str(arr.dtype).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def read_model(path: str | Path) -> tuple[Any, dict]:
    """Load and verify an ONNX model: parses, carries rotation_dl metadata, checksum matches."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelFileError(
            f"{p}: cannot be parsed as ONNX (truncated or corrupt: {type(exc).__name__})"
        ) from exc
    props = {m.key: m.value for m in model.metadata_props}
    if META_KEY not in props or CHECKSUM_KEY not in props:
        raise ModelFileError(f"{p}: not a rotation_dl model (no {META_KEY} metadata)")
    actual = weights_checksum(model)
    if actual != props[CHECKSUM_KEY]:
        raise ModelFileError(
            f"{p}: weights checksum mismatch (file altered): stored "
            f"{props[CHECKSUM_KEY][:12]}.., actual {actual[:12]}.."
        )
    return model, json.loads(props[META_KEY])
