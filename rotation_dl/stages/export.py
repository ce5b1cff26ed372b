"""`export`: the run's latest-fold checkpoints (every seed) -> ONNX files with self-describing,
checksummed metadata, plus optional fp16/int8 variants with their measured deviation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.errors import ConfigError
from rotation_dl.layout import CheckpointRef, RunLayout
from rotation_dl.stages.common import layout_of

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    models: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "\n".join(self.lines)


def checkpoints_to_export(cfg: RunConfig, layout: RunLayout) -> list[CheckpointRef]:
    """`export.checkpoints` when given (fold and seed read from each file's metadata), else
    the best checkpoint of every seed of the latest fold."""
    if cfg.export.checkpoints:
        refs = []
        for c in cfg.export.checkpoints:
            p = Path(c)
            if not p.is_file():
                raise ConfigError(f"export.checkpoints: no such checkpoint {p}")
            from rotation_dl.models.checkpoint import safe_load_checkpoint

            meta = safe_load_checkpoint(p)["hyper_parameters"]
            meta = meta.get("meta") or {}
            refs.append(CheckpointRef(int(meta["fold"]["index"]), int(meta["seed"]), p))
        return refs
    found = layout.latest_checkpoints()
    if not found:
        raise ConfigError(f"no checkpoints under {layout.checkpoints}; run `rotation-dl train`")
    return found


def variant_probe(layout: RunLayout, meta: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """Normalised windows and labels of the last 64 labelled dates of this run's industry bars
    (the model's own spec and statistics); a random probe when the run has no bars."""
    from rotation_dl.features.inputs import panel_inputs
    from rotation_dl.features.normalize import NormStats
    from rotation_dl.features.panel import build_panel
    from rotation_dl.features.spec import FeatureSpec

    spec = FeatureSpec.from_dict(meta["feature_spec"])
    w = int(meta["window"])
    path = layout.industry_bars
    n_feat = len(meta.get("stock_features") or spec.features)
    if path.exists() and meta.get("level", "industry") == "industry":
        ib = pl.read_parquet(path).filter(pl.col("industry").is_in(meta["industries"]))
        panel = build_panel(ib, spec)
        mask = panel.label_mask()
        days = [d for d in range(w - 1, len(panel.dates)) if mask[d].any()][-64:]
        if days and panel.industries == list(meta["industries"]):
            inputs = panel_inputs(panel, days, w, NormStats.from_dict(meta["norm"]))
            labels = np.where(inputs.mask, inputs.label, np.nan)
            return inputs.x, labels, f"the last {len(days)} labelled dates of {path.name}"
    rng = np.random.default_rng(0)
    n = len(meta["industries"])
    probe = rng.standard_normal((16, n, w, spec.bars_per_day, n_feat))
    return probe, rng.standard_normal((16, n)), "a random probe (no industry bars for this run)"


def export(cfg: RunConfig) -> ExportResult:
    """Checkpoint(s) -> ONNX with self-describing metadata (+ optional fp16/int8 variants)."""
    from rotation_dl.export.onnx_export import export_onnx, make_variant, variant_report

    layout = layout_of(cfg)
    result = ExportResult()
    for ref in checkpoints_to_export(cfg, layout):
        path, meta = export_onnx(
            ref.path, layout.onnx_model(ref.fold, ref.seed), opset=cfg.export.opset
        )
        result.models.append(path)
        result.lines.append(
            f"export: {ref.path} -> {path} ({meta['net']['arch']}, {meta['level']} level, "
            f"window {meta['window']}, "
            f"{len(meta.get('stock_features') or meta['feature_spec']['features'])} features, "
            f"opset {meta['opset']})"
        )
        if cfg.export.variants and meta.get("level") == "pooled":
            result.lines.append("  variants: not made for pooled models (fp32 only)")
        elif cfg.export.variants:
            probe, labels, source = variant_probe(layout, meta)
            for kind in cfg.export.variants:
                vp = make_variant(path, kind, layout.onnx_variant(path, kind))
                rep = variant_report(path, vp, probe, labels)
                result.lines.append(
                    f"  {kind}: {vp}; max |score diff| vs fp32 {rep['max_abs_diff']:.2e}, "
                    f"mean {rep['mean_abs_diff']:.2e}; rank IC {rep['rank_ic_fp32']:+.4f} -> "
                    f"{rep['rank_ic_variant']:+.4f} ({rep['rank_ic_change']:+.4f}) on {source}"
                )
    return result
