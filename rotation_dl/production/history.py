"""The score history: each published week's scores, ranks and holdings, appended once to an
append-only Delta table keyed by (asof, model_version, revision).

Publishing a week again with the same result changes nothing (the digest of the week's rows is
compared); a different result for a published week is refused unless `republish`, which appends
the next revision and never rewrites an earlier one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from rotation_dl.errors import PublishedWeekError
from rotation_dl.production import tables

SCHEMA: dict[str, pl.DataType] = {
    "asof": pl.Date(),
    "model_version": pl.Int64(),
    "revision": pl.Int64(),
    "industry": pl.String(),
    "score": pl.Float64(),
    "rank": pl.Int64(),
    "held": pl.Boolean(),
    "action": pl.String(),
    "digest": pl.String(),
    "published_at": pl.String(),
    "by": pl.String(),
}
ROW = ("industry", "score", "rank", "held", "action")


def digest(asof: date, model_version: int, week: pl.DataFrame) -> str:
    """sha256 of the week's rows written canonically (industry order, floats by their exact
    repr): equal digests mean byte-identical scores, ranks and holdings."""
    h = hashlib.sha256(f"{asof}|{model_version}".encode())
    for r in week.select(ROW).sort("industry").iter_rows():
        h.update(("|".join("" if v is None else repr(v) for v in r) + "\n").encode())
    return h.hexdigest()


def read(path: Path) -> pl.DataFrame:
    return tables.read(path, SCHEMA)


def published(path: Path) -> pl.DataFrame:
    """The latest revision of each published week (the rows in force)."""
    rows = read(path)
    if rows.is_empty():
        return rows
    latest = rows.group_by("asof").agg(pl.col("revision").max().alias("_r"))
    return (
        rows.join(latest, on="asof")
        .filter(pl.col("revision") == pl.col("_r"))
        .drop("_r")
        .sort("asof", "rank")
    )


@dataclass(frozen=True)
class Published:
    asof: date
    model_version: int
    revision: int
    outcome: str  # published | unchanged | republished

    def describe(self) -> str:
        what = {
            "published": "published",
            "unchanged": "already published, identical: nothing appended",
            "republished": f"republished as revision {self.revision}",
        }[self.outcome]
        return f"score history: {self.asof} by model v{self.model_version}: {what}"


def publish(
    path: Path,
    asof: date,
    model_version: int,
    week: pl.DataFrame,
    *,
    by: str,
    at: str,
    republish: bool = False,
) -> Published:
    """Append the week (its score table: industry, score, rank, held, action) once."""
    key = digest(asof, model_version, week)
    before = published(path).filter(pl.col("asof") == asof)
    revision = 0
    if not before.is_empty():
        if before["digest"][0] == key:
            return Published(asof, model_version, int(before["revision"][0]), "unchanged")
        if not republish:
            was = int(before["model_version"][0])
            raise PublishedWeekError(
                f"{path}: week {asof} was published (model v{was}, revision "
                f"{before['revision'][0]}) with a different result than model v{model_version} "
                "gives now; set cycle.republish=true to add a revision (nothing is overwritten)"
            )
        revision = int(read(path).filter(pl.col("asof") == asof)["revision"].max()) + 1  # type: ignore[arg-type]
    rows = week.select(ROW).with_columns(
        pl.lit(asof).alias("asof"),
        pl.lit(model_version, pl.Int64).alias("model_version"),
        pl.lit(revision, pl.Int64).alias("revision"),
        pl.lit(key).alias("digest"),
        pl.lit(at).alias("published_at"),
        pl.lit(by).alias("by"),
    )
    tables.append(path, rows.select(list(SCHEMA)).cast(SCHEMA))  # type: ignore[arg-type]
    return Published(asof, model_version, revision, "republished" if revision else "published")
