"""Checkpoint -> ONNX (opset >= 17) with dynamic batch, industry and window axes.

The file's metadata carries the feature spec, normalisation statistics, training range, network
config, code version and a checksum of the weights; `onnx.checker` runs on it and the write is
atomic. Optional fp16 and dynamic-int8 variants report their score deviation and rank-IC change
against fp32 on a probe batch.
"""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotation_dl.artifacts import atomic_write_bytes
from rotation_dl.export.metadata import META_KEY, seal, signing_key
from rotation_dl.features.spec import FeatureSpec
from rotation_dl.models.checkpoint import safe_load_checkpoint
from rotation_dl.models.gru import GRUConfig, build_net
from rotation_dl.provenance import code_version

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Network and metadata from a training checkpoint (weights_only load). Constituent
    models give their whole network (encoder, and pooling for `pooled`)."""
    state = safe_load_checkpoint(path)
    hp = state["hyper_parameters"]
    cfg = GRUConfig(**hp["net"])
    if cfg.level == "industry":
        net = build_net(cfg)
    else:
        from rotation_dl.models.constituents import build_constituent_net

        net = build_constituent_net(cfg, int(hp["n_industries"]))
    weights = {
        k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")
    }
    net.load_state_dict(weights)
    return net.eval(), {"net": hp["net"], "loss": hp.get("loss"), **(hp.get("meta") or {})}


class _PooledGraph(torch.nn.Module):
    """The pooled network with ONNX-friendly inputs (validity as 0/1 floats)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, member, valid):
        return self.net(x, member, valid > 0.5, valid)  # pooling weighs by attention only


def _graph_and_inputs(net: torch.nn.Module, meta: dict, window: int, bars: int, n_feat: int):
    """(module, example inputs, input names, output names, dynamic axes) of the exported
    graph: industry models and `stock` encoders take x only (a stock model's industry
    aggregate is computed by the scorer, `aggregate` in the metadata); `pooled` takes the
    constituents' membership too and returns stock and industry scores."""
    level = meta["net"].get("level", "industry")
    x = torch.zeros(1, 2, window, bars, n_feat)
    axes = {"x": {0: "batch", 1: "assets", 2: "window"}, "score": {0: "batch", 1: "assets"}}
    if level == "industry":
        return net, (x,), ["x"], ["score"], axes
    if level == "stock":
        return net.encoder, (x,), ["x"], ["score"], axes
    member = torch.zeros(1, 2, dtype=torch.long)
    valid = torch.ones(1, 2)
    stock_axes = {0: "batch", 1: "assets"}
    axes = {
        "x": axes["x"],
        "member": stock_axes,
        "valid": stock_axes,
        "stock_score": stock_axes,
        "score": {0: "batch"},
    }
    names = ["x", "member", "valid"]
    return _PooledGraph(net), (x, member, valid), names, ["stock_score", "score"], axes


def _atomic_save(model: Any, path: Path) -> None:
    """The model's exact serialisation (what `read_model` verifies), atomically."""
    atomic_write_bytes(path, model.SerializeToString())


def _toposort(model: Any) -> None:
    """Reorder graph nodes so every input is produced before use (the fp16 converter inserts
    input casts at the end of the node list)."""
    graph = model.graph
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # leave the rest as is; the checker will say what is wrong
            ordered += pending
            break
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def _stamp(model: Any, meta: dict) -> Any:
    import onnx

    _toposort(model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta, default=str)
    onnx.checker.check_model(model)
    return seal(model, signing_key())  # whole-model digest (+ HMAC with a signing key)


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    *,
    opset: int = 17,
    extra_meta: dict | None = None,
) -> tuple[Path, dict]:
    """Export one checkpoint to ONNX; returns (path, metadata)."""
    import onnx

    net, meta = load_checkpoint(checkpoint)
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    bars = spec.bars_per_day
    window = int(meta["window"])
    n_feat = len(meta.get("stock_features") or spec.features)
    graph, example, in_names, out_names, axes = _graph_and_inputs(net, meta, window, bars, n_feat)
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.raw")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                example,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=in_names,
                output_names=out_names,
                dynamic_axes=axes,
            )
        model = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    full_meta = {
        **meta,
        **(extra_meta or {}),
        "opset": opset,
        "checkpoint": str(Path(checkpoint).resolve()),
        "export_code_version": code_version(),
        "input": {
            "name": "x",
            "layout": "[batch, industry, window, bar, feature]"
            if meta["net"].get("level", "industry") == "industry"
            else "[batch, stock, window, bar, feature]",
            "bars_per_day": bars,
            "window": window,
            "names": in_names,
        },
        "level": meta["net"].get("level", "industry"),
        "precision": "fp32",
    }
    _atomic_save(_stamp(model, full_meta), out)
    return out, full_meta


def make_variant(fp32_path: Path, kind: str, out: Path) -> Path:
    """fp16 (float16 weights and activations) or int8 (dynamic quantisation) copy at `out`."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_path))
    meta = json.loads({m.key: m.value for m in model.metadata_props}[META_KEY])
    if kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        conv = convert_float_to_float16(model, keep_io_types=True)
    elif kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = out.with_name(out.name + ".q.tmp")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic pre-processing hint
        try:
            quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        conv = onnx.load(str(tmp))
        tmp.unlink(missing_ok=True)
    else:
        raise ValueError(f"unknown variant {kind!r}; use fp16 or int8")
    _atomic_save(_stamp(conv, {**meta, "precision": kind}), out)
    return out


def variant_report(
    fp32_path: Path, variant_path: Path, probe: np.ndarray, labels: np.ndarray | None = None
) -> dict:
    """Max/mean |score difference| of a variant vs fp32 on a probe batch, and rank IC change."""
    import onnxruntime as ort

    def run(p: Path) -> np.ndarray:
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": probe.astype(np.float32)})[0]

    a, b = run(fp32_path), run(variant_path)
    report = {
        "max_abs_diff": float(np.abs(a - b).max()),
        "mean_abs_diff": float(np.abs(a - b).mean()),
    }
    if labels is not None:
        report["rank_ic_fp32"] = mean_rank_ic(a, labels)
        report["rank_ic_variant"] = mean_rank_ic(b, labels)
        report["rank_ic_change"] = report["rank_ic_variant"] - report["rank_ic_fp32"]
    return report


def mean_rank_ic(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-date rank IC of a [dates, industries] score matrix against labels (NaN =
    unknown), through the backtest's one rank-IC implementation."""
    import polars as pl

    from rotation_dl.backtest.ic import ic_series

    d, n = scores.shape
    keys = {"date": np.repeat(np.arange(d), n), "industry": np.tile(np.arange(n), d)}
    s = pl.DataFrame({**keys, "score": scores.reshape(-1).astype(np.float64)})
    y = pl.DataFrame({**keys, "fwd_excess": labels.reshape(-1).astype(np.float64)})
    ric = ic_series(s, y.with_columns(pl.col("fwd_excess").fill_nan(None)))["rank_ic"]
    return float(ric.mean()) if ric.drop_nulls().len() else float("nan")
