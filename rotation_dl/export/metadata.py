"""Self-describing, tamper-evident ONNX files (no torch needed).

An exported model carries three metadata entries:

* `rotation_dl`: the JSON metadata (feature spec, statistics, window, industries, ...);
* `rotation_dl.sha256`: sha256 of the whole serialised model *without* the integrity entries
  (graph, weights and every metadata field);
* `rotation_dl.hmac` (when a signing key is configured, `ROTATION_DL_MODEL_KEY`): HMAC-SHA256
  of that digest under the key.

`read_model` recomputes the digest from the file's bytes and also checks that the file is the
canonical serialisation of what it parses to, so any altered byte — in the graph, the weights,
the metadata or a framing byte — is refused with `ModelFileError`, never a KeyError or an
onnxruntime traceback. With a key configured, unsigned or wrongly signed models are refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from rotation_dl.errors import ModelFileError

META_KEY = "rotation_dl"
DIGEST_KEY = "rotation_dl.sha256"
HMAC_KEY = "rotation_dl.hmac"
INTEGRITY_KEYS = (DIGEST_KEY, HMAC_KEY)
SIGNING_KEY_ENV = "ROTATION_DL_MODEL_KEY"
REQUIRED_META = ("feature_spec", "window", "industries", "norm", "net")


def signing_key() -> bytes | None:
    """The configured model-signing key (ROTATION_DL_MODEL_KEY), or None."""
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode() if key else None


def _strip_integrity(model: Any) -> Any:
    """Remove the integrity entries from `model`'s metadata (in place); returns it."""
    keep = [(m.key, m.value) for m in model.metadata_props if m.key not in INTEGRITY_KEYS]
    del model.metadata_props[:]
    for k, v in keep:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def _body_digest(model: Any) -> str:
    """sha256 of the model serialised without its integrity entries."""
    body = type(model)()
    body.CopyFrom(model)
    return hashlib.sha256(_strip_integrity(body).SerializeToString()).hexdigest()


def _signature(digest: str, key: bytes) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def seal(model: Any, key: bytes | None = None) -> Any:
    """Add the whole-model digest (and the HMAC when `key`) as the last metadata entries."""
    digest = _body_digest(_strip_integrity(model))
    entries = [(DIGEST_KEY, digest)] + ([(HMAC_KEY, _signature(digest, key))] if key else [])
    for k, v in entries:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def read_model(path: str | Path, key: bytes | None = None) -> tuple[Any, dict]:
    """Load and verify an ONNX model: parses, is exactly what it parses to, carries rotation_dl
    metadata with the fields scoring needs, and its whole-model digest matches; with a signing
    key (argument, else ROTATION_DL_MODEL_KEY) its HMAC must match too."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    raw = p.read_bytes()
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelFileError(
            f"{p}: cannot be parsed as ONNX (truncated or corrupt: {type(exc).__name__})"
        ) from exc
    try:  # string fields are decoded lazily: a flipped byte there fails only on access
        props = {m.key: m.value for m in model.metadata_props}
        intact = model.SerializeToString() == raw and _body_digest(model) == props.get(DIGEST_KEY)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{p}: corrupt text field ({type(exc).__name__}): altered") from exc
    if META_KEY not in props:
        raise ModelFileError(f"{p}: not a rotation_dl model (no {META_KEY} metadata)")
    if DIGEST_KEY not in props:
        raise ModelFileError(
            f"{p}: no whole-model checksum (exported by an older rotation_dl); re-export it "
            "with `rotation-dl export`"
        )
    if not intact:
        raise ModelFileError(f"{p}: checksum mismatch: the file was altered after export")
    key = key if key is not None else signing_key()
    if key is not None:
        if HMAC_KEY not in props:
            raise ModelFileError(
                f"{p}: unsigned model, but {SIGNING_KEY_ENV} is set: only models exported "
                "with the key are scored"
            )
        if not hmac.compare_digest(props[HMAC_KEY], _signature(props[DIGEST_KEY], key)):
            raise ModelFileError(f"{p}: wrong signature: not exported with this signing key")
    try:
        meta = json.loads(props[META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{p}: unreadable {META_KEY} metadata ({exc.msg})") from exc
    missing = [k for k in REQUIRED_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ModelFileError(f"{p}: {META_KEY} metadata lacks {missing}")
    return model, meta
