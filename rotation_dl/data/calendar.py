"""Trading calendars: which dates can carry bars.

Weekends never do, nor dates after today (in the market's time zone). Exchange holidays come
from the maintained `exchange_calendars` package (the `calendars` extra) when a calendar code is
configured (`market.calendar`, e.g. XSHG for Shanghai/Shenzhen, XNYS for New York); without the
package only weekends and future dates are checked, and ingest says so once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from rotation_dl.errors import ConfigError

log = logging.getLogger(__name__)


@functools.cache
def _calendar(code: str):
    import exchange_calendars as xcals

    try:
        xcals.get_calendar(code)  # by default only the last 20 years: long histories need more
    except Exception as exc:  # InvalidCalendarName and friends
        raise ConfigError(f"market.calendar={code!r} is not a known exchange calendar") from exc
    for start in ("1990-01-02", "2000-01-03"):
        try:
            return xcals.get_calendar(code, start=start)
        except Exception:  # noqa: S112 - some calendars begin later: try a later start
            continue
    return xcals.get_calendar(code)


@functools.cache
def _sessions(code: str, first: date, last: date) -> frozenset[date] | None:
    """Trading sessions of exchange `code` between two dates (None without the package)."""
    try:
        import exchange_calendars  # noqa: F401
    except ImportError:
        log.warning(
            "exchange_calendars is not installed: only weekends and future dates are checked "
            "(pip install 'rotation_dl[calendars]' for exchange holidays)"
        )
        return None
    cal = _calendar(code)
    lo = max(first, cal.first_session.date())
    hi = min(last, cal.last_session.date())
    if lo > hi:
        return frozenset()
    return frozenset(d.date() for d in cal.sessions_in_range(lo.isoformat(), hi.isoformat()))


def calendar_span(code: str) -> tuple[date, date] | None:
    """First and last session the calendar knows (None without the package)."""
    try:
        import exchange_calendars  # noqa: F401
    except ImportError:
        return None
    cal = _calendar(code)
    return cal.first_session.date(), cal.last_session.date()


def today_in(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def non_trading_days(
    dates: Iterable[date], calendar: str | None, timezone: str, today: date | None = None
) -> dict[date, str]:
    """Each date that cannot be a trading day, with the reason: weekend, after today, or an
    exchange holiday (dates outside the range the calendar knows are not judged by it)."""
    ds = sorted(set(dates))
    if not ds:
        return {}
    today = today or today_in(timezone)
    out: dict[date, str] = {}
    for d in ds:
        if d > today:
            out[d] = "after today"
        elif d.weekday() >= 5:
            out[d] = "a weekend"
    if calendar:
        span = calendar_span(calendar)
        sessions = _sessions(calendar, ds[0], ds[-1]) if span else None
        if sessions is not None and span is not None:
            for d in ds:
                if d not in out and span[0] <= d <= span[1] and d not in sessions:
                    out[d] = f"not a {calendar} trading day (holiday)"
    return out


def trading_days(start: date, n_days: int, calendar: str | None = None) -> list[date]:
    """`n_days` trading days from `start`: the calendar's sessions when given and available
    (weekdays outside the span it knows), else weekdays."""
    days: list[date] = []
    d = start
    span = calendar_span(calendar) if calendar else None
    while len(days) < n_days:
        hi = d + timedelta(days=2 * (n_days - len(days)) + 14)
        sessions = _sessions(calendar, d, hi) if span else None
        while d <= hi and len(days) < n_days:
            known = sessions is not None and span is not None and span[0] <= d <= span[1]
            ok = d.weekday() < 5 and (not known or d in sessions)
            if ok:
                days.append(d)
            d += timedelta(days=1)
    return days
