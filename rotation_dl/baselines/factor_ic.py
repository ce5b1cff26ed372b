"""Weekly factor rank-IC monitor (METHODOLOGY section 4).

Weekly cross-sectional Spearman rank IC between each factor at the prior week's last close and
each stock's return over the week. Built-in price/volume factors come from daily bars; any extra
numeric columns of a user factor table (symbol, date, ...) are monitored the same way.
"""

from __future__ import annotations

import polars as pl

from rotation_dl.backtest.schedule import rebalance_dates

BUILTIN = (
    "log_cap",
    "log_cap_cubed",
    "volatility_1y",
    "beta_1y",
    "ret_10d",
    "turnover_20d",
    "amount_20d",
    "amihud_20d",
    "price_level",
)


def builtin_factors(
    daily: pl.DataFrame | pl.LazyFrame, shares: pl.DataFrame | None = None, year: int = 250
) -> pl.LazyFrame:
    """symbol, date + built-in factors (cap factors only when shares outstanding are given)."""
    lf = daily.lazy().filter(pl.col("close") > 0).sort("symbol", "date")
    r = pl.col("close") / pl.col("close").shift(1).over("symbol") - 1
    lf = lf.with_columns(r.alias("_r"))
    mkt = lf.group_by("date").agg(pl.col("_r").mean().alias("_m"))
    lf = lf.join(mkt, on="date", how="left").sort("symbol", "date")
    minp = year // 2

    def roll(e: pl.Expr, fn: str, w: int, mp: int) -> pl.Expr:
        return getattr(e, fn)(w, min_samples=mp).over("symbol")

    cov = roll(pl.col("_r") * pl.col("_m"), "rolling_mean", year, minp) - roll(
        pl.col("_r"), "rolling_mean", year, minp
    ) * roll(pl.col("_m"), "rolling_mean", year, minp)
    var_m = roll(pl.col("_m"), "rolling_var", year, minp)
    amount = (
        pl.col("amount") if "amount" in lf.collect_schema() else pl.col("close") * pl.col("volume")
    )
    exprs = [
        roll(pl.col("_r"), "rolling_std", year, minp).alias("volatility_1y"),
        (cov / var_m).alias("beta_1y"),
        (pl.col("close") / pl.col("close").shift(10).over("symbol") - 1).alias("ret_10d"),
        roll(amount, "rolling_mean", 20, 10).alias("amount_20d"),
        roll(pl.col("_r").abs() / amount.replace(0, None) * 1e8, "rolling_mean", 20, 10).alias(
            "amihud_20d"
        ),
        pl.col("close").alias("price_level"),
    ]
    if shares is not None:  # joins do not keep row order: re-sort before any window expression
        lf = lf.join(
            shares.lazy().select("symbol", "shares_outstanding"), on="symbol", how="left"
        ).sort("symbol", "date")
        cap = (pl.col("close") * pl.col("shares_outstanding")).log()
        exprs += [
            cap.alias("log_cap"),
            cap.pow(3).alias("_cap3"),
            roll(pl.col("volume") / pl.col("shares_outstanding"), "rolling_mean", 20, 10).alias(
                "turnover_20d"
            ),
        ]
    out = lf.with_columns(exprs)
    names = [e.meta.output_name() for e in exprs]
    if shares is not None:  # non-linear size: cube of log cap, residual on log cap per date
        x, y = pl.col("log_cap"), pl.col("_cap3")
        beta = ((x - x.mean()) * (y - y.mean())).mean().over("date") / x.var(ddof=0).over("date")
        resid = (y - y.mean().over("date")) - beta * (x - x.mean().over("date"))
        out = out.with_columns(resid.alias("log_cap_cubed"))
        names = [("log_cap_cubed" if n == "_cap3" else n) for n in names]
    return out.select("symbol", "date", *names)


def weekly_factor_ic(
    daily: pl.DataFrame | pl.LazyFrame,
    factors: pl.DataFrame | pl.LazyFrame,
    trailing: int = 12,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(weekly IC table: week_end, factor, rank_ic, n), (summary per factor: this week's IC,
    trailing mean over `trailing` weeks, overall mean, ICIR)."""
    closes = daily.lazy().filter(pl.col("close") > 0).select("symbol", "date", "close").collect()
    weeks = rebalance_dates(closes["date"].unique(), "weekly")
    wk = closes.filter(pl.col("date").is_in(weeks)).sort("symbol", "date")
    # a stock-week's forward return runs to the NEXT week-end; a stock without a close there
    # (suspended) is left out, not paired with a return over several weeks
    following = pl.DataFrame({"date": weeks}, schema={"date": pl.Date}).with_columns(
        pl.col("date").shift(-1).alias("week_end")
    )
    wk = wk.join(following, on="date", how="left").with_columns(
        pl.when(pl.col("date").shift(-1).over("symbol") == pl.col("week_end"))
        .then(pl.col("close").shift(-1).over("symbol") / pl.col("close") - 1)
        .alias("_fwd")
    )
    f = factors.lazy().collect()
    names = [c for c in f.columns if c not in ("symbol", "date") and f[c].dtype.is_numeric()]
    long = (
        wk.join(f, on=["symbol", "date"], how="inner")
        .unpivot(
            index=["symbol", "date", "week_end", "_fwd"],
            on=names,
            variable_name="factor",
            value_name="value",
        )
        .drop_nulls(["value", "_fwd", "week_end"])
        .filter(pl.col("value").is_finite() & pl.col("_fwd").is_finite())
    )
    ic = (
        long.group_by("week_end", "factor")
        .agg(
            pl.corr(pl.col("value").rank(), pl.col("_fwd").rank()).alias("rank_ic"),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") >= 10)
        .with_columns(pl.col("rank_ic").fill_nan(None))
        .sort("week_end", "factor")
    )
    last = ic["week_end"].max()
    summary = (
        ic.sort("week_end")
        .group_by("factor")
        .agg(
            pl.col("rank_ic").filter(pl.col("week_end") == last).first().alias("this_week"),
            pl.col("rank_ic").tail(trailing).mean().alias(f"trailing_{trailing}w"),
            pl.col("rank_ic").mean().alias("mean"),
            (pl.col("rank_ic").mean() / pl.col("rank_ic").std()).alias("icir"),
            pl.len().alias("weeks"),
        )
        .sort("this_week", descending=True, nulls_last=True)
    )
    return ic, summary


def top_bottom(summary: pl.DataFrame, n: int = 3) -> dict[str, list[str]]:
    """Best and worst factors by this week's rank IC."""
    s = summary.drop_nulls("this_week").sort("this_week", descending=True)
    return {"top": s.head(n)["factor"].to_list(), "bottom": s.tail(n)["factor"].to_list()[::-1]}
