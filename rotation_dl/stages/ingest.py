"""`sample` and `ingest`: raw bar files -> the validated canonical store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rotation_dl.config import RunConfig
from rotation_dl.data.ingest import IngestReport, ingest_bars
from rotation_dl.data.store import read_manifest, stored_partitions
from rotation_dl.errors import ConfigError, StoreError
from rotation_dl.stages.common import layout_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleResult:
    paths: dict[str, Path]
    raw_dir: Path

    def describe(self) -> str:
        return f"sample market written to {self.raw_dir}"


def sample(cfg: RunConfig) -> SampleResult:
    """Write the synthetic sample market as raw files (data=sample: stocks; data=sample_series:
    industry series)."""
    from rotation_dl.synthetic.market import write_sample_market
    from rotation_dl.synthetic.series import write_series_market

    d = cfg.data
    if d.kind != "sample" or d.sample is None or d.raw_dir is None:
        raise ConfigError("`sample` needs data=sample (or data=sample_series)")
    if d.series:
        paths = write_series_market(d.raw_dir, d.sample)
    else:
        paths = write_sample_market(d.raw_dir, d.sample, cfg.trading_session())
    return SampleResult(paths, Path(d.raw_dir))


@dataclass(frozen=True)
class UpgradeResult:
    store: Path
    rows: int
    version: int | None

    def describe(self) -> str:
        return (
            f"store-upgrade: {self.store} is now a Delta table, version {self.version}, "
            f"{self.rows:,} rows; the old files are in {self.store / 'bars.pre-delta'} "
            "(delete them once you are content)"
        )


def store_upgrade(cfg: RunConfig) -> UpgradeResult:
    """Convert the run's store from the old layout (parquet under bars/) to the Delta table."""
    from rotation_dl.data.store import store_version, upgrade_store

    root = layout_of(cfg).store
    rows = upgrade_store(root)
    return UpgradeResult(root, rows, store_version(root))


@dataclass(frozen=True)
class StoreCheckResult:
    report: dict

    def describe(self) -> str:
        r = self.report
        return (
            f"store-check: {r['store']} version {r['version']} is whole: {r['files']:,} data "
            f"file(s) in {r['partitions']:,} partition(s) ({r['first']} .. {r['last']}), "
            f"{r['rows']:,} rows"
        )


def store_check(cfg: RunConfig) -> StoreCheckResult:
    """Check that the run's store (or data.store_version) has its manifest, its log and
    every data file its version lists; a StoreError names what is missing and what to do."""
    from rotation_dl.data.store import check_store

    return StoreCheckResult(check_store(layout_of(cfg).store, cfg.data.store_version))


@dataclass(frozen=True)
class VacuumResult:
    store: Path
    removed: list[Path]

    def describe(self) -> str:
        names = ", ".join(str(p.relative_to(self.store)) for p in self.removed[:3])
        more = f" (+{len(self.removed) - 3} more)" if len(self.removed) > 3 else ""
        what = f": {names}{more}" if self.removed else ""
        return (
            f"store-vacuum: {self.store}: removed {len(self.removed)} file(s) or folder(s) "
            f"that no committed version lists{what}"
        )


def store_vacuum(cfg: RunConfig) -> VacuumResult:
    """Remove what killed commits left in the store (data files no version lists, staging of
    dead ingests), under the writer lock; every version stays readable."""
    from rotation_dl.data.store import vacuum_store

    root = layout_of(cfg).store
    return VacuumResult(root, vacuum_store(root, cfg.ingest.lock_timeout_s))


@dataclass(frozen=True)
class IngestResult:
    report: IngestReport
    store: Path

    def describe(self) -> str:
        return f"ingest: {self.report.summary()}\n  store: {self.store}"


def ingest(cfg: RunConfig) -> IngestResult:
    """Validate raw bar files and add them to the store (the sample market is generated
    first when it is the input and not there yet)."""
    d = cfg.data
    if d.kind == "sample" and not Path(str(d.bars)).exists():
        sample(cfg)
    if not d.bars:
        raise ConfigError("data.bars is not set: give a bar file or folder")
    store = layout_of(cfg).store
    report = ingest_bars(
        d.bars,
        store,
        d.mapping,
        session=cfg.trading_session(),
        timezone=cfg.market.timezone,
        calendar=cfg.market.calendar,
        check_limits=cfg.market.price_limits == "ashare",
        partition=cfg.ingest.partition,
        chunk_rows=cfg.ingest.chunk_rows,
        chunk_days=cfg.ingest.chunk_days,
        policy=cfg.ingest.policy,
        bar_size=d.bar_minutes,
        lock_timeout_s=cfg.ingest.lock_timeout_s,
        units_unchecked=d.units_unchecked,
    )
    return IngestResult(report, store)


def existing_store(cfg: RunConfig, command: str) -> Path:
    """The run's store for a command that only reads it (`score`): never ingests. A missing
    store is one line naming the command that builds it."""
    layout = layout_of(cfg)
    if cfg.data.store_version is None and (
        read_manifest(layout.store) is None or not stored_partitions(layout.store)
    ):
        raise StoreError(
            f"{layout.store}: no store here; `{command}` reads the store and never writes it: "
            "run `rotation-dl ingest` with the same overrides first"
        )
    return ensure_store(cfg)  # with a store (or a pinned version) this only checks it


def ensure_store(cfg: RunConfig) -> Path:
    """The run's store, ingesting the configured bars first when there is none (never when
    an older version is asked for: `data.store_version`)."""
    layout = layout_of(cfg)
    if cfg.data.store_version is not None:
        from rotation_dl.data.store import resolve_version

        if read_manifest(layout.store) is None:
            raise StoreError(
                f"{layout.store}: no store to read version {cfg.data.store_version} of"
            )
        resolve_version(layout.store, cfg.data.store_version)
        return layout.store
    if read_manifest(layout.store) is None or not stored_partitions(layout.store):
        log.info("no store at %s: running ingest first", layout.store)
        ingest(cfg)
    return layout.store
