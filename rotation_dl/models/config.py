"""Network, loss and training configs: plain dataclasses, importable without torch.

They are the typed forms of the `model`, `loss` and `trainer` config groups, and what checkpoints
store (as plain dicts), so a checkpoint loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from rotation_dl.errors import ConfigError

# The names each registry answers to, written once; `models.losses.LOSSES`, the aggregation
# code, conf/model, conf/loss and the sweep's choices are checked against them
# (tests/test_registries.py).
Arch = Literal["flat", "hierarchical"]
Level = Literal["industry", "stock", "pooled"]
Aggregation = Literal["mean", "zmean", "amount_weighted", "median"]
LossName = Literal["mse", "ic", "listnet"]
ARCHS: tuple[str, ...] = get_args(Arch)
LEVELS: tuple[str, ...] = get_args(Level)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
LOSS_NAMES: tuple[str, ...] = get_args(LossName)


@dataclass(frozen=True)
class GRUConfig:
    """Network shape. `n_features` comes from the feature spec at training time."""

    n_features: int = 0
    arch: Arch = "flat"
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    day_hidden: int | None = None  # hierarchical: intraday encoder width (default: hidden)
    # what the encoder reads: industry bars (`industry`), or every constituent stock's bars,
    # scored per stock and aggregated (`stock`) or pooled into an industry vector (`pooled`)
    level: Level = "industry"
    aggregate: Aggregation = "mean"  # stock
    aux_weight: float = 0.0  # pooled: weight of the auxiliary per-stock loss
    max_stocks: int | None = None  # stocks sampled per training batch (None: all)
    max_constituents: int | None = None  # pooled: constituents sampled per industry and step

    def __post_init__(self) -> None:
        if self.arch not in ("flat", "hierarchical"):
            raise ConfigError(f"model.arch={self.arch!r} is not one of 'flat', 'hierarchical'")
        if self.level not in ("industry", "stock", "pooled"):
            raise ConfigError(
                f"model.level={self.level!r} is not one of 'industry', 'stock', 'pooled'"
            )
        if self.aggregate not in ("mean", "zmean", "amount_weighted", "median"):
            raise ConfigError(
                f"model.aggregate={self.aggregate!r} is not one of mean, zmean, "
                "amount_weighted, median"
            )
        if self.aux_weight < 0:
            raise ConfigError(f"model.aux_weight must be >= 0, got {self.aux_weight}")
        for name in ("max_stocks", "max_constituents"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"model.{name} must be at least 1 (or null), got {value}")
        for name in ("hidden", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.day_hidden is not None and self.day_hidden < 1:
            raise ConfigError(f"model.day_hidden must be at least 1, got {self.day_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossConfig:
    """The `loss` group (it lands at `trainer.loss`): a loss name and its parameters."""

    name: LossName = "mse"
    temperature: float = 0.1  # listnet: softmax temperature of the target ranking

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be positive, got {self.temperature}")

    def params(self) -> dict[str, Any]:
        """Keyword arguments the named loss takes."""
        return {"temperature": self.temperature} if self.name == "listnet" else {}


@dataclass(frozen=True)
class TrainConfig:
    """How each fold is trained (the `trainer` group, with the `loss` group inside)."""

    batch_dates: int = 16
    max_epochs: int = 30
    min_epochs: int = 1
    patience: int = 5
    loss: LossConfig = field(default_factory=LossConfig)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: Literal["cosine", "none"] | None = "cosine"
    grad_clip: float = 1.0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # bf16-mixed on CUDA, 32-true on CPU
    deterministic: bool = True
    compile: bool = False
    on_device: bool = False
    # stock models: the stock panel is held in (device) memory when it fits this budget,
    # otherwise batches are gathered from the memory-mapped panel date block by date block
    panel_memory_gb: float = 8.0
    shuffle_labels: bool = False
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    limit_train_batches: float | int = 1.0
    # CPU threads for torch (None: this machine's usable cores / the training processes on it)
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_dates", "max_epochs", "min_epochs", "patience", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_epochs > self.max_epochs:
            raise ConfigError(
                f"trainer.min_epochs ({self.min_epochs}) exceeds max_epochs ({self.max_epochs})"
            )
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr must be positive, got {self.lr}")

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        import torch

        gpu = torch.cuda.is_available() and self.accelerator in ("auto", "gpu", "cuda")
        return "bf16-mixed" if gpu else "32-true"

    def to_dict(self) -> dict:
        return asdict(self)
