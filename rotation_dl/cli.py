"""`rotation-dl <command> [key=value ...]`: compose the config, run one stage, print its result.

The CLI only composes (`config.compose_run`), calls one function of `rotation_dl.stages` and
prints what it returns. User errors (bad data, bad config, a refused model) print one line and
exit with status 2. Stage modules are imported only for the command that runs, so `score`
works with the `inference` extra alone (no torch).
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from rotation_dl.errors import RotationDLError, TrainingStopped, environment_error_in

log = logging.getLogger("rotation_dl")

# command -> (stage module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sample": ("ingest", "sample", "write the synthetic sample market as raw files"),
    "ingest": ("ingest", "ingest", "raw bar files -> validated canonical store"),
    "store-upgrade": (
        "ingest",
        "store_upgrade",
        "convert a store of the old layout (parquet under bars/) to the Delta table",
    ),
    "store-vacuum": (
        "ingest",
        "store_vacuum",
        "remove what killed commits left in the store (no committed version loses a file)",
    ),
    "store-check": (
        "ingest",
        "store_check",
        "check that the store's log and every data file of its version are there",
    ),
    "industry-bars": ("industry", "industry_bars", "store + classification -> industry bars"),
    "train": (
        "train",
        "train",
        "walk-forward GRU training -> factor panel + checkpoints (-m: Optuna sweep)",
    ),
    "plan": ("train", "plan", "the walk-forward plan (folds and dates) without training"),
    "backtest": ("evaluate", "backtest", "backtest a factor panel (factors=PATH)"),
    "baseline": ("evaluate", "baseline", "diffusion-index baseline and its backtest"),
    "timing": ("evaluate", "timing", "micro-cap diffusion timing: DI, grid, signal machines"),
    "factor-ic": ("evaluate", "factor_ic", "weekly rank-IC monitor of price/volume factors"),
    "compare": (
        "compare",
        "compare",
        "factor panels side by side: CIs, SPA vs a benchmark, model confidence set, costs",
    ),
    "export": ("export", "export", "checkpoints -> ONNX with self-describing metadata"),
    "score": ("score", "score", "score the latest complete week with onnxruntime"),
    "report": ("report", "report", "weekly HTML + Markdown report"),
    "cycle": (
        "cycle",
        "cycle",
        "the weekly production cycle: ingest, bars, retrain when due, gate, score, monitor",
    ),
    "models": ("models", "models", "the model registry: models list | promote VERSION | rollback"),
    "init-experiment": (
        "experiment",
        "init_experiment",
        "save NAME [key=value ...] as your own experiment (then: experiment=NAME)",
    ),
    "demo": (
        "demo",
        "demo",
        "every stage on the sample market, with progress (experiment=demo unless given)",
    ),
}

USAGE = (
    "usage: rotation-dl <command> [key=value ...]\ncommands:\n"
    + "\n".join(f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items())
    + "\nconfig: conf/config.yaml (Hydra); e.g. rotation-dl ingest data=sw_15min"
)

NOISE = (
    ".*LeafSpec.*",
    ".*log_every_n_steps.*",
    ".*does not have many workers.*",
    ".*Mean of empty slice.*",
    ".*litlogger.*",
)


class OncePerCommand(logging.Filter):
    """Lets each warning through once per command (one message template of one logger) and
    counts the repeats, which `summary()` reports at the end in one line each."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], list] = {}
        self._last: tuple[logging.LogRecord | None, bool] = (None, True)  # a record meets
        # every handler's filter: the decision for the last record, held (not its id)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self._last[0] is record:
            return self._last[1]
        key = (record.name, str(record.msg))
        first = key not in self.seen
        if first:
            self.seen[key] = [record.getMessage(), 0]
        else:
            self.seen[key][1] += 1
        self._last = (record, first)
        return first

    def summary(self) -> list[str]:
        return [
            f"warning repeated {n} more time{'s' if n > 1 else ''} in this command: {first}"
            for first, n in self.seen.values()
            if n
        ]


ONCE = OncePerCommand()


def _setup_logging(level: str) -> None:
    """One log format, each warning once (with its count at the end); Lightning's own handler
    and known third-party noise silenced."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if ONCE not in handler.filters:
            handler.addFilter(ONCE)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).propagate = False
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def run_command(name: str, overrides: Sequence[str], multirun: bool = False):
    """Compose the run, call the command's stage and return its result (raises user errors)."""
    from rotation_dl.config import compose_run

    if name == "init-experiment":  # saves the overrides themselves, composed only to check
        from rotation_dl.stages.experiment import init_experiment

        return init_experiment(overrides)
    positional = []
    if name == "models":  # `models promote 3`: the action and version come first
        positional = [o for o in overrides if "=" not in o and not o.startswith("~")]
        overrides = [o for o in overrides if o not in positional]
        if len(positional) > 2:
            raise RotationDLError(
                f"models: unexpected {' '.join(positional[2:])}; use `models list`, "
                "`models promote VERSION` or `models rollback` (then key=value overrides)"
            )
    if name == "demo" and not any(o.lstrip("+").startswith("experiment=") for o in overrides):
        overrides = ["experiment=demo", *overrides]  # what `make demo` runs
    cfg = compose_run(overrides)
    _setup_logging(cfg.log_level)
    if multirun:
        if name != "train":
            raise RotationDLError("-m (multirun) is supported for `train` sweeps only")
        from rotation_dl.stages.sweep import hyperparameter_search

        return hyperparameter_search(cfg, list(overrides))
    module, func, _ = COMMANDS[name]
    stage = getattr(importlib.import_module(f"rotation_dl.stages.{module}"), func)
    if name == "models":
        return stage(cfg, *positional)
    if name in ("demo", "train", "cycle"):  # progress (steps, the training plan) as it comes
        return stage(cfg, progress=lambda text: print(text, flush=True))
    return stage(cfg)


# what each command writes (RunLayout paths): named when an OS error carries no path
WRITES = {
    "sample": ("output_dir",),
    "ingest": ("store",),
    "store-upgrade": ("store",),
    "industry-bars": ("industry_bars",),
    "train": ("checkpoints", "output_dir"),
    "export": ("onnx",),
    "score": ("score",),
    "report": ("report",),
    "cycle": ("output_dir", "score", "report"),
}


def writing_to(name: str, overrides: Sequence[str]) -> str | None:
    """The folders (or file) the command writes, for an error that names no path."""
    from rotation_dl.config import compose_run

    try:
        paths = compose_run(overrides).paths
    except RotationDLError:
        return None
    keys = WRITES.get(name, ("output_dir",))
    return " or ".join(str(getattr(paths, k)) for k in keys)


def _user_error(name: str, exc: BaseException) -> int:
    """Print one line for a user or environment error; the exit status 2 (or the error's own,
    e.g. 143 for training stopped by SIGTERM)."""
    msg = " ".join(str(exc).split())
    print(f"rotation-dl {name}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
    return int(getattr(exc, "exit_status", 2))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rotation-dl: unknown command '{name}'\n{USAGE}", file=sys.stderr)
        return 2
    multirun = any(o in ("-m", "--multirun") for o in rest)
    overrides = [o for o in rest if o not in ("-m", "--multirun")]
    ONCE.seen.clear()
    try:
        result = run_command(name, overrides, multirun)
    except (RotationDLError, TrainingStopped) as exc:
        return _user_error(name, exc)
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops at a batch boundary)
        print(
            f"rotation-dl {name}: interrupted (Ctrl-C); every artifact is written whole or not "
            "at all, so the same command starts again from the last good state",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # the environment's failures: disk full, read-only, file size
        typed = environment_error_in(exc, writing_to(name, overrides))
        if typed is None:
            raise
        return _user_error(name, typed)
    for line in ONCE.summary():
        print(line, file=sys.stderr)
    text = result.describe()
    if text:
        print(text)
    return int(getattr(result, "exit_status", 0))  # the cycle: 3 = done, with an alert


if __name__ == "__main__":
    raise SystemExit(main())
