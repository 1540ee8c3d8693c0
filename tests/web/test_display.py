"""What values look like on the pages, and the charts drawn from them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sac import gasday
from sac.services.readings import ROME
from sac.web import chart, display


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, tzinfo=ROME).astimezone(dt.UTC)


def test_an_index_is_scaled_exactly_with_its_unit() -> None:
    assert display.quantity(123456789, -3, 14) == "123\u202f456.789 Sm³"
    assert display.quantity(5, 0, 13) == "5 m³"
    assert display.quantity(None, -3, 14) == "—"
    assert display.scaled(10000000000000001, -3) == Decimal("10000000000000.001")  # no float


def test_diagnostics_battery_and_valve_read_as_words() -> None:
    bits = {8: "battery low", 5: "overflow"}
    assert display.diagnostic(0, bits) == "OK"
    assert display.diagnostic(0x120, bits) == "overflow, battery low (0x0120)"
    assert display.diagnostic(0x0080, {}) == "0x0080"
    assert display.diagnostic_flags(0x81, bits) == ["unknown bit 0", "unknown bit 7"]
    assert display.battery(3650, 4) == "3\u202f650 days" and display.battery(93, 56) == "93 %"
    assert [display.valve_name(s) for s in (0, 1, 2, 7, None)] == [
        "closed",
        "open",
        "closed, opening enabled",
        "state 7",
        "—",
    ]


def test_times_read_in_italian_time_with_how_long_ago() -> None:
    summer = dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.UTC)
    assert display.local_time(summer) == "2026-07-01 12:00"  # CEST
    assert display.local_time(None) == "never"
    now = summer + dt.timedelta(hours=3)
    assert display.ago(summer, now) == "3 h ago"
    assert display.ago(now, now) == "just now"


def test_consumption_per_gas_day_draws_a_gap_never_folds_it() -> None:
    readings = [
        (at(1, 8), 100),
        (at(2, 6), 103),  # 06:00 closes gas day 1, the 1st's 06:00 to the 2nd's
        (at(3, 6), 110),
        # nothing closes gas day 3: it is a gap, and day 4 (no day before) another
        (at(5, 6), 125),
        (at(6, 6), 5),  # a meter replaced: no negative gas, a gap
        (at(7, 6), 9),
    ]
    days = gasday.daily_consumption(readings, dt.date(2026, 2, 27), dt.date(2026, 3, 7))
    bars = chart.day_bars(days)
    assert [(b.day.day, b.value) for b in bars] == [
        (2, 7.0),  # the days before the first consumption are left out, not gaps
        (3, None),
        (4, None),
        (5, None),
        (6, 4.0),
        (7, None),
    ]
    assert bars[0].at == dt.datetime(2026, 3, 3, 6, tzinfo=ROME).astimezone(dt.UTC) - dt.timedelta(
        hours=12
    )
    svg = chart.svg_bars(bars, "per gas day", "Sm³")
    assert svg.count('<rect class="bar"') == 2 and svg.count('<rect class="gap"') == 4
    assert 'data-day="2026-03-04"' in svg and "2026-03-04: no reading, a gap" in svg
    assert chart.svg_bars(chart.day_bars(days[:2]), "t", "u") == ""  # nothing to draw


def test_a_long_series_is_thinned_but_keeps_its_extremes() -> None:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    points = [
        chart.Point(start + dt.timedelta(hours=h), float(h if h != 5000 else -1))
        for h in range(8760)
    ]
    thinned = chart.thin(points)
    assert len(thinned) <= 2 * (chart.WIDTH - chart.LEFT - chart.RIGHT)
    assert min(p.value for p in thinned) == -1 and max(p.value for p in thinned) == 8759
    assert [p.at for p in thinned] == sorted(p.at for p in thinned)
    svg = chart.svg_line(points, "index <of> meter", "Sm³")
    assert svg.startswith('<svg class="chart"') and "index &lt;of&gt; meter" in svg
    assert chart.svg_line([], "t", "u") == "" and chart.svg_bars([], "t", "u") == ""
