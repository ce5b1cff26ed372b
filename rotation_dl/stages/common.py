"""Helpers every stage shares and that run no other stage: the run's layout and the checks
for a classification. (Stages that build an input on demand live in `inputs`.)"""

from __future__ import annotations

import polars as pl

from rotation_dl.config import RunConfig
from rotation_dl.errors import ConfigError
from rotation_dl.layout import RunLayout


def layout_of(cfg: RunConfig) -> RunLayout:
    return RunLayout.from_paths(cfg.paths)


def require_constituents(cfg: RunConfig, what: str) -> None:
    """Refuse (ConfigError) a stage that needs constituent stocks when the data are industry
    series."""
    if cfg.data.series:
        raise ConfigError(
            f"{what} needs constituent stock bars and a classification; data.level=industries "
            "(data=industry_series) holds industry series only"
        )


def require_classification(cfg: RunConfig, what: str = "industry bars from stocks") -> str:
    """The classification file's path, or a ConfigError saying it is missing (or that the
    data are industry series, which have none)."""
    require_constituents(cfg, what)
    if not cfg.data.classification:
        raise ConfigError(
            f"{what} needs data.classification (the stock -> industry file), which is not "
            "set; for bars that are already industry series use data=industry_series"
        )
    return cfg.data.classification


def read_classification_of(cfg: RunConfig, what: str = "this stage") -> pl.DataFrame:
    from rotation_dl.data.readers import read_classification

    return read_classification(
        require_classification(cfg, what),
        columns=cfg.data.classification_columns,
        on_missing_industry=cfg.industry.on_missing_industry,
    )
