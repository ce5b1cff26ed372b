"""Stages: one module per command family. Each stage takes the typed run config, reads its
inputs, calls the packages, writes its artifacts atomically at the paths `RunLayout` gives, and
returns a small result whose `describe()` is what the CLI prints.

    ingest.py     sample, ingest
    industry.py   industry-bars
    train.py      train (walk-forward GRU)
    sweep.py      train -m (Optuna search over composed runs)
    evaluate.py   backtest, baseline, timing, factor-ic
    export.py     export (checkpoint -> ONNX)
    score.py      score (onnxruntime; no torch)
    report.py     report
    demo.py       demo (every stage in order)

Arrows point one way: the CLI imports stages, stages import packages, nothing imports the CLI.
"""
