"""The gas day: Italian gas is accounted per day from 06:00 to 06:00, Europe/Rome time (a gas
day is named by the calendar date it starts on), and per gas month, from 06:00 of the month's
first day.  A gas day lasts 23 hours on the day summer time starts and 25 on the day it ends.

A reading captured exactly at a boundary (the daily profile's capture at 06:00) closes the gas
day that ends there: the days are ``(start, end]`` for what a meter recorded.  A day's
consumption is the difference between the last index captured in it and the last captured in
the day before; where either is missing the day is a gap (None), never folded into the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

__all__ = [
    "ROME",
    "DailyConsumption",
    "bounds",
    "closing_day",
    "daily_consumption",
    "gas_day_of",
    "month_start",
]

ROME = ZoneInfo("Europe/Rome")
START = dt.time(6)  # a gas day starts at 06:00 Europe/Rome
_TICK = dt.timedelta(microseconds=1)


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"{t} has no time zone: the gas day needs an instant")
    return t


def gas_day_of(t: dt.datetime) -> dt.date:
    """The gas day ``t`` falls in, its start included."""
    local = _aware(t).astimezone(ROME)
    day = local.date()
    return day - dt.timedelta(days=1) if local.time() < START else day


def closing_day(t: dt.datetime) -> dt.date:
    """The gas day whose value a meter's record captured at ``t`` gives: ``t`` in its
    ``(start, end]`` (a capture at 06:00 closes the day before)."""
    return gas_day_of(_aware(t) - _TICK)


def bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Where gas day ``day`` starts and ends, in UTC (23, 24 or 25 hours apart)."""
    start = dt.datetime.combine(day, START, ROME)
    end = dt.datetime.combine(day + dt.timedelta(days=1), START, ROME)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def month_start(year: int, month: int) -> dt.datetime:
    """The start of the gas month: 06:00 Europe/Rome of its first day, in UTC."""
    return bounds(dt.date(year, month, 1))[0]


@dataclass(frozen=True, slots=True)
class DailyConsumption:
    """Gas day ``day``: ``volume`` between the indexes captured at ``since`` (the last one of
    the day before) and ``until`` (the day's last one); None where one of them is missing."""

    day: dt.date
    volume: Decimal | None
    since: dt.datetime | None
    until: dt.datetime | None


Number = int | float | Decimal


def daily_consumption(
    readings: Iterable[tuple[dt.datetime, Number]], first: dt.date, last: dt.date
) -> list[DailyConsumption]:
    """One row per gas day from ``first`` to ``last``, from index ``readings`` (capture time,
    value, in any order).  A counter that went back (a meter replaced, an index reset) gives
    no consumption for that day rather than a negative one."""
    closing: dict[dt.date, tuple[dt.datetime, Decimal]] = {}
    for when, value in readings:
        day = closing_day(when)
        if day not in closing or when > closing[day][0]:
            closing[day] = (when, Decimal(str(value)))
    rows = []
    day = first
    while day <= last:
        before, now = closing.get(day - dt.timedelta(days=1)), closing.get(day)
        volume = None
        if before is not None and now is not None and now[1] >= before[1]:
            volume = now[1] - before[1]
        rows.append(
            DailyConsumption(day, volume, before[0] if before else None, now[0] if now else None)
        )
        day += dt.timedelta(days=1)
    return rows
