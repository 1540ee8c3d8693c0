"""What a meter's page shows, gathered from the store: its last values, the history of each
object the specification lists (a chart for the numbers, a table of changes for the
others), the consumption per gas day with its gaps, the daily diagnostic, its events and
its commands.  :meth:`sac.web.pages.Pages.meter` renders what :func:`gather` returns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sac import gasday
from sac.store import Meter, Role, WebSession
from sac.web import chart, display
from sac.web.history import QUANTITIES, day_rows, gas_days, object_of, reading_text

__all__ = ["CHANGE_LIMIT", "gather"]

CHANGE_LIMIT = 20  # rows of a table of changes (the newest)
DAILY_DIAGNOSTIC_DAYS = 14  # gas days of the daily diagnostic's table
CHARTED = ("converted_volume_index_under_alarm", "battery_autonomy")  # besides the index
TABLED = ("pdr", "ldn", "current_diagnostic", "valve")


def _width(start: dt.datetime, end: dt.datetime) -> int:
    """Seconds a pixel column of a chart spans (a minute at least): the database keeps the
    last reading of each."""
    return max(60, -(-(end - start) // dt.timedelta(seconds=1) // chart.COLUMNS))


async def _index(
    store: Any, meter: Meter, obis: Any, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    """The index: its chart, its readings, and the consumption per gas day (gaps kept)."""
    ldn, unit = meter.ldn, display.unit_name(meter.index_unit)
    line = await store.readings.buckets(ldn, obis, 2, start, end, _width(start, end))
    history = await store.readings.between(ldn, obis, 2, start, end, 200)
    last_day = gasday.gas_day_of(now) - dt.timedelta(days=1)  # the last whole gas day
    days, _unit = await gas_days(store, ldn, obis, gasday.gas_day_of(start), last_day)
    bars = chart.day_bars(days)
    shown = days[len(days) - len(bars) :]  # from the first day with a consumption
    scaler = history[-1].scaler if history else meter.index_scaler
    return dict(
        index_chart=chart.svg_line(
            chart.points(line.readings), f"Converted-volume index of {ldn}", unit
        ),
        daily_chart=chart.svg_bars(bars, f"Consumption per gas day of {ldn}", unit),
        daily=day_rows(shown, scaler)[:31],
        daily_unit=unit,
        history=list(reversed(history)),
        history_count=line.total,
    )


async def _charts(
    store: Any, registry: Any, meter: Meter, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """The other numbers' charts: the index under alarm, the battery's autonomy."""
    out = []
    for name in CHARTED:
        quantity = QUANTITIES[name]
        obis = object_of(registry, meter.profile, name)
        found = await store.readings.buckets(
            meter.ldn, obis, quantity.attribute, start, end, _width(start, end)
        )
        points = chart.points(found.readings)
        last = found.readings[-1] if found.readings else None
        unit = display.unit_name(last.unit) if last is not None else ""
        title = f"{quantity.label} of {meter.ldn}"
        out.append(dict(name=name, label=quantity.label, svg=chart.svg_line(points, title, unit)))
    return out


async def _changes(
    store: Any, registry: Any, meter: Meter, bits: Any, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """The tables of changes: PDR, LDN, current diagnostic (its bits named), valve state."""
    out = []
    for name in TABLED:
        quantity = QUANTITIES[name]
        obis = object_of(registry, meter.profile, name)
        rows = await store.readings.changes(
            meter.ldn, obis, quantity.attribute, start, end, CHANGE_LIMIT
        )
        out.append(
            dict(
                name=name,
                label=quantity.label,
                rows=[
                    dict(
                        value=reading_text(r, name),
                        flags=_flags(r, name, bits),
                        captured=r.captured,
                        received=r.received,
                        source=r.source,
                    )
                    for r in reversed(rows)
                ],
            )
        )
    return out


def _flags(reading: Any, name: str, bits: Any) -> list[str]:
    if "diagnostic" not in name or reading.value is None:
        return []
    return display.diagnostic_flags(int(reading.value), bits)


async def _daily_diagnostic(
    store: Any, registry: Any, meter: Meter, bits: Any, end: dt.datetime
) -> list[dict[str, Any]]:
    """The daily diagnostic of the latest gas days, newest first: of each gas day the last
    value (the daily profile's rows carry it, a capture at 06:00 giving the gas day that ends
    then; a frame may carry it too, as often as the meter pushes)."""
    obis = object_of(registry, meter.profile, "daily_diagnostic")
    start = end - dt.timedelta(days=DAILY_DIAGNOSTIC_DAYS + 1)
    found = await store.readings.buckets(
        meter.ldn, obis, 2, start, end, 86400, gasday.ROME, dt.timedelta(hours=6), closing=True
    )
    rows = found.readings[-DAILY_DIAGNOSTIC_DAYS:]
    return [
        dict(
            day=gasday.closing_day(r.captured),
            value=reading_text(r, "daily_diagnostic"),
            flags=_flags(r, "daily_diagnostic", bits),
            alarm=bool(r.value),
            captured=r.captured,
            received=r.received,
        )
        for r in reversed(rows)
        if r.captured is not None
    ]


async def gather(
    web: Any, meter: Meter, session: WebSession, days: int, now: dt.datetime
) -> dict[str, Any]:
    """Everything the meter's page shows, for the last ``days`` days."""
    store, registry, ldn = web.store, web.registry, meter.ldn
    start = now - dt.timedelta(days=days)
    end = now + dt.timedelta(days=1)  # a meter whose clock runs ahead is still drawn
    objects = registry.objects_of(meter.profile)  # the meter's profile's objects
    profile = display.profile_of(registry, meter.profile)
    bits = getattr(profile, "diagnostic_bits", {}) or {}
    alarm = await store.readings.last(ldn, objects["converted_volume_index_under_alarm"].obis, 2, 1)
    counters = None
    if session.user.role.may(Role.ADMIN):
        sap = int(registry.match(assigned=meter.profile).clients["management"])
        counters = await store.counters.state(ldn, sap)
    return dict(
        m=meter,
        row=display.meter_row(registry, meter, now),
        system_title=meter.system_title.hex().upper() if meter.system_title else "",
        alarm_index=alarm[0] if alarm else None,
        diagnostic_flags=display.diagnostic_flags(meter.diagnostic, bits),
        **await _index(store, meter, objects["converted_volume_index"].obis, start, end, now),
        charts=await _charts(store, registry, meter, start, end),
        changes=await _changes(store, registry, meter, bits, start, end),
        daily_diagnostic=await _daily_diagnostic(store, registry, meter, bits, end),
        events=[display.event_row(e, profile) for e in await store.events.latest(ldn, 50)],
        commands=await store.commands.recent(ldn, None, 30),
        connections=await store.connections.recent(ldn, 20),
        counters=counters,
    )
