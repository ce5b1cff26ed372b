"""Benchmark: ONNX Runtime vs torch eager vs torch.compile for scoring, and `score` end to end.

Writes outputs/bench/infer.json. Same network and inputs for every engine, measured in one run:
latency p50/p99 (ms) and throughput for scoring the whole cross-section (1 date x all industries
x window) and for batch 1 (one industry). With a CUDA GPU, also the CUDA execution provider vs
torch on CUDA. `score_end_to_end_s` times the `rotation-dl score` command (a fresh process:
imports, store -> industry bars -> features -> onnxruntime -> outputs) on the real 15-min data
for one week, when the data and a trained real-data run are present.

Keys: ort_speedup_vs_torch_cpu (cross-section, p50), score_end_to_end_s, p99_ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rotation_dl.models.gru import GRUConfig, build_net

REPO = Path(__file__).resolve().parents[1]


def latency(fn, x, repeat: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1000
    return {
        "p50_ms": float(np.percentile(t, 50)),
        "p99_ms": float(np.percentile(t, 99)),
        "per_s": float(1000 / t.mean()),
    }


def export(net, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["score"],
            dynamic_axes={"x": {0: "b", 1: "n", 2: "w"}, "score": {0: "b", 1: "n"}},
        )


def engines(net, path: Path, device: str) -> dict:
    import onnxruntime as ort

    prov = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), providers=prov)
    out = {"onnxruntime": lambda x: sess.run(None, {"x": x.cpu().numpy()})[0]}

    def eager(x):
        with torch.inference_mode():
            y = net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            return y

    out["torch_eager"] = eager
    try:
        compiled = torch.compile(net)

        def comp(x):
            with torch.inference_mode():
                y = compiled(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                return y

        comp(torch.zeros(1, 2, 4, 16, 9, device=device))
        out["torch_compile"] = comp
    except Exception as exc:  # compile needs a C++ toolchain; report rather than fail
        print(f"torch.compile unavailable: {exc}", file=sys.stderr)
    return out


def score_end_to_end(run: str) -> float | None:
    """Time `rotation-dl score` on the real 15-min data (needs a trained run `run`)."""
    data = REPO.parent / "shared" / "data" / "ashare_15min_2025_2026"
    ckpts = sorted((REPO / "checkpoints" / run).glob("fold_*/seed_0/best.ckpt"))
    if not data.exists() or not ckpts:
        return None
    base = [sys.executable, "-m", "rotation_dl.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"run={run}",
            "experiment=sw_15min",
            f"run={run}",
            f"paths.onnx={tmp}/onnx",
            f"paths.score={tmp}/score",
        ]
        subprocess.run(
            [*base, "export", *common, f"export.checkpoints=[{ckpts[-1]}]"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(
                [*base, "score", *common, "log_level=WARNING"],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--industries", type=int, default=31)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--real-run", default="sw_15min")
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "infer.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    net = build_net(GRUConfig(n_features=9, hidden=64, layers=2)).eval()
    results: dict = {"device": "cpu", "threads": torch.get_num_threads()}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export(net, torch.zeros(1, 2, args.window, 16, 9), path)
        for device in devices:
            d_net = net.to(device)
            shapes = {
                "cross_section": (1, args.industries, args.window, 16, 9),
                "batch1": (1, 1, args.window, 16, 9),
            }
            for name, shape in shapes.items():
                x = torch.randn(*shape, device=device)
                for eng, fn in engines(d_net, path, device).items():
                    results[f"{device}/{name}/{eng}"] = latency(fn, x, args.repeat)
                    print(device, name, eng, results[f"{device}/{name}/{eng}"], flush=True)
    cs = "cpu/cross_section"
    summary = {
        "ort_speedup_vs_torch_cpu": results[f"{cs}/torch_eager"]["p50_ms"]
        / results[f"{cs}/onnxruntime"]["p50_ms"],
        "p99_ms": results[f"{cs}/onnxruntime"]["p99_ms"],
        "score_end_to_end_s": score_end_to_end(args.real_run),
        **results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if "/" not in k}, indent=2))


if __name__ == "__main__":
    main()
