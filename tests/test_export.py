"""ONNX export and torch-free scoring: metadata, parity, variants, refusals, ensembles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
import torch
from conftest import REPO, SMALL_TRAIN

from rotation_dl.errors import ModelFileError, ScoringError
from rotation_dl.export.metadata import DIGEST_KEY, HMAC_KEY, META_KEY, read_model, seal
from rotation_dl.export.onnx_export import (
    export_onnx,
    load_checkpoint,
    make_variant,
    variant_report,
)
from rotation_dl.export.scoring import OnnxScorer, score_from_industry_bars, write_score


def _cli(args, cwd=REPO, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rotation_dl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained run per architecture: (paths dict) with checkpoints and outputs."""
    runs = {}
    for arch in ("flat", "hierarchical"):
        root = tmp_path_factory.mktemp(arch)
        args = [
            f"paths.output_dir={root / 'out'}",
            f"paths.checkpoints={root / 'ck'}",
            f"model={arch}",
            "model.day_hidden=8",
            *SMALL_TRAIN,
        ]
        proc = _cli(["train", *args])
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[arch] = {
            "root": root,
            "args": args,
            "ckpt": sorted((root / "ck").glob("fold_*/seed_0/best.ckpt"))[-1],
        }
    return runs


@pytest.mark.parametrize("arch", ["flat", "hierarchical"])
def test_export_metadata_and_parity(trained, tmp_path, arch):
    ck = trained[arch]["ckpt"]
    path, meta = export_onnx(ck, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    props = {m.key: m.value for m in model.metadata_props}
    stored = json.loads(props[META_KEY])
    for key in (
        "feature_spec",
        "norm",
        "train_range",
        "net",
        "code_version",
        "window",
        "industries",
        "data_hash",
    ):
        assert key in stored, key
    assert props[DIGEST_KEY] and not list(tmp_path.glob(".*tmp"))
    net, _ = load_checkpoint(ck)
    sess = OnnxScorer([path]).sessions[0]
    F, P = len(meta["feature_spec"]["features"]), meta["input"]["bars_per_day"]
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        for window in (1, 4, 12):
            x = rng.standard_normal((batch, 5, window, P, F)).astype(np.float32)
            with torch.no_grad():
                ref = net(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"x": x})[0]
            assert np.abs(ref - got).max() <= 1e-5, (batch, window)


def test_variants_and_reports(trained, tmp_path):
    path, meta = export_onnx(trained["flat"]["ckpt"], tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    probe = rng.standard_normal((8, 5, 4, 16, 9)).astype(np.float32)
    for kind in ("fp16", "int8"):
        vp = make_variant(path, kind, tmp_path / kind / "m.onnx")
        _, vmeta = read_model(vp)
        assert vmeta["precision"] == kind
        rep = variant_report(path, vp, probe, rng.standard_normal((8, 5)))
        assert 0 <= rep["max_abs_diff"] < 0.1 and np.isfinite(rep["rank_ic_change"])


def test_refuses_altered_and_truncated(trained, tmp_path):
    path, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "m.onnx")
    model = onnx.load(str(path))
    init = model.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(tmp_path / "altered.onnx"))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        read_model(tmp_path / "altered.onnx")
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_model(tmp_path / "cut.onnx")
    with pytest.raises(ModelFileError, match="no such model"):
        read_model(tmp_path / "none.onnx")


def _industry_bars(trained, arch="flat"):
    return pl.read_parquet(trained[arch]["root"] / "out" / "industry_bars.parquet")


def test_scoring_matches_training_panel(trained, tmp_path):
    """Scores from the production path equal the torch model on the training-time panel."""
    from rotation_dl.features.normalize import NormStats, normalise
    from rotation_dl.features.panel import build_panel
    from rotation_dl.features.spec import FeatureSpec

    ck = trained["flat"]["ckpt"]
    path, meta = export_onnx(ck, tmp_path / "m.onnx")
    ib = _industry_bars(trained)
    res = score_from_industry_bars(ib, OnnxScorer([path]))
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    panel = build_panel(ib, spec)
    d = panel.dates.index(res.asof)
    z = normalise(np.asarray(panel.x), NormStats.from_dict(meta["norm"]))
    x = z[d - meta["window"] + 1 : d + 1].transpose(1, 0, 2, 3)[None]
    net, _ = load_checkpoint(ck)
    with torch.no_grad():
        ref = net(torch.from_numpy(np.ascontiguousarray(x))).numpy()[0]
    got = res.table.sort("industry")["score"].to_numpy()
    order = np.argsort(panel.industries)
    np.testing.assert_allclose(got, ref[order], atol=1e-5)
    later = [d for d in panel.dates if d > res.asof]  # the week is complete: holidays allowed
    assert res.asof.weekday() == 4 or (
        later and later[0].isocalendar()[:2] != res.asof.isocalendar()[:2]
    )


def test_score_refusals(trained, tmp_path):
    path, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "m.onnx")
    scorer = OnnxScorer([path])
    ib = _industry_bars(trained)
    gone = ib.filter(pl.col("industry") != ib["industry"][0])
    with pytest.raises(ScoringError, match="missing from the data.*on_missing_industry=warn"):
        score_from_industry_bars(gone, scorer, on_missing_industry="fail")
    with pytest.raises(ScoringError, match="missing from the data"):  # nothing left to score
        score_from_industry_bars(ib.head(0), scorer)
    with pytest.raises(ScoringError, match="data has 30-min bars"):
        score_from_industry_bars(ib, scorer, bar_minutes=30)
    early = ib["date"].unique().sort()[3]
    with pytest.raises(ScoringError, match="not enough history"):
        score_from_industry_bars(ib, scorer, asof=early)


def test_an_industry_without_data_is_scored_as_absent_and_never_held(trained, tmp_path):
    """One industry's only constituent stopped trading: the others are scored exactly as
    with it, the absent one is named, unranked among the scored and sold if it was held."""
    path, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "m.onnx")
    scorer = OnnxScorer([path])
    ib = _industry_bars(trained)
    full = score_from_industry_bars(ib, scorer)
    gone = full.holdings[0]  # a held industry loses its data
    res = score_from_industry_bars(
        ib.filter(pl.col("industry") != gone), scorer, current_holdings=full.holdings
    )
    assert res.missing == (gone,) and gone in res.warning()
    row = res.table.filter(pl.col("industry") == gone).to_dicts()[0]
    assert row["score"] is None and not row["held"] and not row["in_data"]
    assert row["action"] == "sell" and row["rank"] == len(scorer.industries)
    assert gone not in res.holdings and res.holdings  # the rest are still held
    others = full.table.filter(pl.col("industry") != gone).sort("industry")["score"]
    kept = res.table.filter(pl.col("industry") != gone).sort("industry")["score"]
    assert kept.to_list() == others.to_list()  # each industry's score reads its own bars only
    payload = write_score(
        res, tmp_path / "s.parquet", tmp_path / "s.csv", tmp_path / "s.json", [path]
    )
    assert payload["missing_industries"] == [gone] and gone in payload["warnings"][0]


def test_ensemble_averages(trained, tmp_path):
    ck = trained["flat"]["ckpt"]
    a, _ = export_onnx(ck, tmp_path / "a.onnx")
    b_ck = sorted((trained["flat"]["root"] / "ck").glob("fold_*/seed_0/best.ckpt"))[0]
    b, _ = export_onnx(b_ck, tmp_path / "b.onnx")
    ib = _industry_bars(trained)
    one = [
        score_from_industry_bars(ib, OnnxScorer([p])).table.sort("industry")["score"]
        for p in (a, b)
    ]
    both = score_from_industry_bars(ib, OnnxScorer([a, b])).table.sort("industry")["score"]
    np.testing.assert_allclose(both.to_numpy(), ((one[0] + one[1]) / 2).to_numpy(), atol=1e-6)


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    BLOCKED = ("torch", "lightning", "pytorch_lightning", "torchmetrics")
    class _Fail(importlib.abc.Loader):
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            raise ImportError(f"{module.__name__} is blocked in this test")
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, _Fail())
            return None
    sys.meta_path.insert(0, _Block())
""")


def test_export_score_cli_without_torch(trained, tmp_path):
    run = trained["flat"]
    exp = _cli(["export", *run["args"], "export.variants=[int8]"])
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert "int8" in exp.stdout and "rank IC" in exp.stdout and "labelled dates" in exp.stdout
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**__import__("os").environ, "PYTHONPATH": str(block)}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    assert check.returncode != 0  # the blocker works
    holdings = tmp_path / "holdings.csv"
    pl.DataFrame({"industry": ["IND01", "IND02"]}).write_csv(holdings)
    out = tmp_path / "score"
    sc = _cli(
        [
            "score",
            *run["args"],
            f"paths.score={out}",
            f"score.holdings={holdings}",
            "portfolio.k=2",
            "portfolio.buffer=3",
        ],
        env=env,
    )
    assert sc.returncode == 0, sc.stderr[-3000:]
    assert "holdings:" in sc.stdout
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3 and {Path(f).suffix for f in files} == {".parquet", ".csv", ".json"}
    payload = json.loads(next(out.glob("*.json")).read_text())
    assert len(payload["holdings"]) == 2 and len(payload["table"]) == 5
    bad = _cli(
        [
            "score",
            *run["args"],
            f"paths.score={tmp_path / 'bad'}",
            f"score.models=[{tmp_path / 'missing.onnx'}]",
        ],
        env=env,
    )
    assert bad.returncode == 2 and "ModelFileError" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_export_layout_metadata_and_variants_apart(trained, tmp_path):
    """`export` names files by the checkpoint's own fold and seed, records the session and an
    absolute checkpoint path, and keeps variants in sub-folders that `score` never picks up."""
    run = trained["flat"]
    onnx_dir = tmp_path / "onnx"
    exp = _cli(["export", *run["args"], f"paths.onnx={onnx_dir}", "export.variants=[fp16]"])
    assert exp.returncode == 0, exp.stderr[-2000:]
    fp32 = sorted(onnx_dir.glob("*.onnx"))
    last_fold = run["ckpt"].parent.parent.name  # fold_XX of the latest fold
    assert [p.name for p in fp32] == [f"{last_fold}_seed_0.onnx"]
    assert (onnx_dir / "fp16" / fp32[0].name).is_file()
    _, meta = read_model(fp32[0])
    assert meta["feature_spec"]["session"] == [["09:30", "11:30"], ["13:00", "15:00"]]
    assert Path(meta["checkpoint"]).is_absolute() and Path(meta["checkpoint"]).is_file()
    sc = _cli(["score", *run["args"], f"paths.onnx={onnx_dir}", f"paths.score={tmp_path / 's'}"])
    assert sc.returncode == 0, sc.stderr[-2000:]
    payload = json.loads(next((tmp_path / "s").glob("*.json")).read_text())
    assert payload["models"] == [str(fp32[0])]


def test_scoring_uses_the_models_session(trained, tmp_path):
    """The session comes from the model: a run whose `session` key differs scores the same,
    and metadata whose session contradicts the graph's input is refused."""
    run = trained["flat"]
    onnx_dir = tmp_path / "onnx"
    assert _cli(["export", *run["args"], f"paths.onnx={onnx_dir}"]).returncode == 0
    common = [*run["args"], f"paths.onnx={onnx_dir}"]
    a = _cli(["score", *common, f"paths.score={tmp_path / 'a'}"])
    other = "market.session=[[09:30,11:30],[13:00,15:15]]"
    b = _cli(["score", *common, f"paths.score={tmp_path / 'b'}", other])
    assert a.returncode == 0 and b.returncode == 0, b.stderr[-2000:]
    ta, tb = (pl.read_parquet(next((tmp_path / n).glob("*.parquet"))) for n in ("a", "b"))
    assert ta.equals(tb)
    model_path = next(onnx_dir.glob("*.onnx"))
    model = onnx.load(str(model_path))
    props = {m.key: m for m in model.metadata_props}
    altered = json.loads(props[META_KEY].value)
    altered["feature_spec"]["session"] = [["09:30", "11:30"], ["13:00", "15:15"]]
    props[META_KEY].value = json.dumps(altered)
    onnx.save(model, str(tmp_path / "edited.onnx"))  # edited by hand: the checksum says so
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        OnnxScorer([tmp_path / "edited.onnx"])
    (tmp_path / "other.onnx").write_bytes(seal(model).SerializeToString())  # made that way
    with pytest.raises(ModelFileError, match="17 bars a day, the graph's input takes 16"):
        OnnxScorer([tmp_path / "other.onnx"])


def _regions(data: bytes, model) -> dict[str, int]:
    """A byte offset inside each region of a serialised model."""
    init = model.graph.initializer[0]
    raw = onnx.numpy_helper.to_array(init).tobytes()
    props = {m.key: m.value for m in model.metadata_props}
    node = model.graph.node[len(model.graph.node) // 2]
    return {
        "header": 1,
        "graph node": data.index(node.op_type.encode()),
        "weights": data.index(raw[:16]) + 8,
        "metadata json": data.index(b'"norm"') + 3,
        "feature spec": data.index(b'"feature_spec"') + 20,
        "digest": data.index(props[DIGEST_KEY].encode()) + 10,
        "last byte": len(data) - 1,
    }


def test_every_altered_byte_is_refused_in_one_line(trained, tmp_path, capsys):
    """A byte flipped in any region of an exported model (graph, weights, metadata, digest,
    framing) is refused with ModelFileError, and `score` says so in one line with exit 2."""
    from rotation_dl.cli import main

    path, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "m.onnx")
    data = path.read_bytes()
    regions = _regions(data, onnx.load_model_from_string(data))
    spread = {f"offset {k}": k for k in range(0, len(data), max(1, len(data) // 40))}
    for name, at in {**regions, **spread}.items():
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[at] ^= flip
            (tmp_path / "bad.onnx").write_bytes(bytes(bad))
            try:
                read_model(tmp_path / "bad.onnx")
            except ModelFileError:
                continue
            pytest.fail(f"{name}: byte {at} xor {flip:#x} was accepted")
    assert read_model(path)[1]["window"]  # the untouched file still reads
    code = main(["score", f"score.models=[{tmp_path / 'bad.onnx'}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ModelFileError" in err[0]


def test_signed_models(trained, tmp_path, monkeypatch):
    """With ROTATION_DL_MODEL_KEY set, export signs (HMAC) and scoring refuses unsigned and
    wrongly signed models; without it, a signed model still reads (integrity only)."""
    unsigned, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "plain.onnx")
    monkeypatch.setenv("ROTATION_DL_MODEL_KEY", "production-secret")
    signed, _ = export_onnx(trained["flat"]["ckpt"], tmp_path / "signed.onnx")
    props = {m.key: m.value for m in onnx.load(str(signed)).metadata_props}
    assert len(props[HMAC_KEY]) == 64
    assert read_model(signed)[1]["window"]
    with pytest.raises(ModelFileError, match="unsigned model"):
        read_model(unsigned)
    monkeypatch.setenv("ROTATION_DL_MODEL_KEY", "another-key")
    with pytest.raises(ModelFileError, match="wrong signature"):
        read_model(signed)
    monkeypatch.delenv("ROTATION_DL_MODEL_KEY")
    assert read_model(signed)[1]["window"] and read_model(unsigned)[1]["window"]


@pytest.mark.parametrize("keep", [0.5, 0.05, 0.0])
def test_a_truncated_checkpoint_is_one_checkpoint_error(trained, tmp_path, keep):
    """Cut anywhere (even to nothing), a checkpoint given to export is refused in one line."""
    from rotation_dl.errors import CheckpointError

    data = Path(trained["flat"]["ckpt"]).read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="cut.ckpt") as err:
        export_onnx(cut, tmp_path / "m.onnx")
    assert "\n" not in str(err.value) and not (tmp_path / "m.onnx").exists()
