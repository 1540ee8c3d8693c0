"""The gas day (06:00 to 06:00 Europe/Rome) and daily consumption, across the summer-time
changes of 2026 (29 March, 25 October)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from sac.gasday import ROME, bounds, closing_day, daily_consumption, gas_day_of, month_start

UTC = dt.UTC


def rome(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ROME)


def test_a_gas_day_runs_from_six_to_six_rome_time() -> None:
    assert gas_day_of(rome(2026, 12, 3, 6, 0)) == dt.date(2026, 12, 3)
    assert gas_day_of(rome(2026, 12, 3, 5, 59, 59)) == dt.date(2026, 12, 2)
    assert gas_day_of(rome(2026, 12, 3, 23, 0)) == dt.date(2026, 12, 3)
    # in UTC: 05:00 in winter (CET, +1), 04:00 in summer (CEST, +2)
    assert gas_day_of(dt.datetime(2026, 12, 3, 4, 59, tzinfo=UTC)) == dt.date(2026, 12, 2)
    assert gas_day_of(dt.datetime(2026, 12, 3, 5, 0, tzinfo=UTC)) == dt.date(2026, 12, 3)
    assert gas_day_of(dt.datetime(2026, 7, 3, 4, 0, tzinfo=UTC)) == dt.date(2026, 7, 3)
    assert bounds(dt.date(2026, 12, 3)) == (
        dt.datetime(2026, 12, 3, 5, tzinfo=UTC),
        dt.datetime(2026, 12, 4, 5, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        (dt.date(2026, 3, 28), 23),  # summer time starts at 02:00 on the 29th, inside it
        (dt.date(2026, 3, 29), 24),
        (dt.date(2026, 10, 24), 25),  # it ends at 03:00 on the 25th
        (dt.date(2026, 10, 25), 24),
        (dt.date(2026, 12, 3), 24),
    ],
)
def test_the_days_summer_time_changes_are_23_and_25_hours(day: dt.date, hours: int) -> None:
    start, end = bounds(day)
    assert end - start == dt.timedelta(hours=hours)
    assert gas_day_of(start) == day and gas_day_of(end) == day + dt.timedelta(days=1)


def test_a_capture_at_six_closes_the_day_before() -> None:
    assert closing_day(rome(2026, 12, 4, 6, 0)) == dt.date(2026, 12, 3)
    assert closing_day(rome(2026, 12, 4, 6, 0, 1)) == dt.date(2026, 12, 4)
    assert closing_day(rome(2026, 12, 3, 6, 0, 0)) == dt.date(2026, 12, 2)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        gas_day_of(dt.datetime(2026, 12, 3, 6))


def test_the_gas_month_starts_at_six_on_its_first_day() -> None:
    assert month_start(2026, 1) == dt.datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert month_start(2026, 7) == dt.datetime(2026, 7, 1, 4, tzinfo=UTC)


def test_daily_consumption_keeps_gaps_and_the_long_day() -> None:
    # the daily profile's captures at 06:00, one missing (the 26th's), the last day's index
    # read at noon
    readings = [
        (rome(2026, 10, 24, 6), 1000),
        (rome(2026, 10, 25, 6), 1010),  # closes the 25-hour gas day of the 24th
        (rome(2026, 10, 26, 6), 1013.5),
        (rome(2026, 10, 28, 6), 1030),  # the 27th's capture is missing
        (rome(2026, 10, 28, 12), 1031),
        (rome(2026, 10, 28, 9), 1030.5),  # out of order: the later one counts
    ]
    rows = daily_consumption(readings, dt.date(2026, 10, 24), dt.date(2026, 10, 28))
    volumes = [(r.day.day, r.volume) for r in rows]
    assert volumes == [
        (24, Decimal(10)),
        (25, Decimal("3.5")),
        (26, None),  # closed by the missing capture: a gap
        (27, None),  # opened by it: a gap too, never 16.5 folded into one day
        (28, Decimal(1)),  # so far today (06:00 to 12:00)
    ]
    assert rows[0].since == rome(2026, 10, 24, 6) and rows[0].until == rome(2026, 10, 25, 6)
    assert rows[1].since == rome(2026, 10, 25, 6) and rows[1].until == rome(2026, 10, 26, 6)
    assert rows[4].until == rome(2026, 10, 28, 12)


def test_an_index_that_went_back_is_no_negative_consumption() -> None:
    readings = [(rome(2026, 12, 1, 6), 500), (rome(2026, 12, 2, 6), 3)]
    [row] = daily_consumption(readings, dt.date(2026, 12, 1), dt.date(2026, 12, 1))
    assert row.volume is None and row.since is not None and row.until is not None
