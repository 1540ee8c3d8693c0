"""Charts drawn on the server as SVG: a number over time (the converted-volume index, the
index under alarm, the battery's autonomy) and the consumption per gas day, gaps shown.  No
script, no library to load: the page shows the chart as soon as it arrives, prints, and
works without network access to anything but the SAC.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from sac import gasday
from sac.services.readings import ROME
from sac.store.model import Reading

__all__ = ["DayBar", "Point", "day_bars", "svg_bars", "svg_line"]

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 26, 36
COLUMNS = WIDTH - LEFT - RIGHT  # pixel columns of the plot


@dataclass(frozen=True, slots=True)
class Point:
    at: dt.datetime
    value: float  # a chart needs no exact decimals (the tables show the stored values)


def points(readings: Iterable[Reading]) -> list[Point]:
    """The readings that have a value, as points at their capture (else receipt) time in
    their unit (the scaler applied)."""
    return [
        Point(r.captured or r.received, r.value * 10.0 ** (r.scaler or 0))
        for r in readings
        if r.value is not None
    ]


@dataclass(frozen=True, slots=True)
class DayBar:
    """A gas day's bar: drawn at the day's middle; ``value`` None is a gap (no index at
    one of its ends), drawn as such, never folded into the next day."""

    day: dt.date
    at: dt.datetime
    value: float | None


def day_bars(days: Iterable[gasday.DailyConsumption]) -> list[DayBar]:
    """The bars of gas days (:func:`sac.gasday.daily_consumption`), from the first day that
    has a consumption: the days before the first reading are no gap, they are before."""
    bars: list[DayBar] = []
    for d in days:
        if d.volume is None and not bars:
            continue
        start, end = gasday.bounds(d.day)
        value = None if d.volume is None else float(d.volume)
        bars.append(DayBar(d.day, start + (end - start) / 2, value))
    return bars


def _scale(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """A rounded axis covering lo..hi and its ticks."""
    if hi <= lo:
        hi = lo + 1
    span = hi - lo
    step = 10 ** int(f"{span:e}".split("e")[1])
    for factor in (1, 2, 5, 10):
        if span / (step * factor / 10) <= 6:
            step = step * factor / 10
            break
    start = (lo // step) * step
    ticks = []
    t = start
    while t <= hi + step / 2:
        ticks.append(t)
        t += step
    return start, ticks[-1], ticks


def _number(v: float, step: float) -> str:
    """A tick label with the decimals its step needs (31 249.5, 31 250.0, not 31 250 twice)."""
    places = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:,.{places}f}".replace(",", "\u202f")


def _frame(title: str, unit: str, body: list[str], y_ticks: list[str], x_ticks: list[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<text class="unit" x="{LEFT - 8}" y="{TOP - 14}" text-anchor="end">{escape(unit)}</text>'
        + "".join(y_ticks)
        + "".join(x_ticks)
        + f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}"'
        f' y2="{HEIGHT - BOTTOM}"/>' + "".join(body) + "</svg>"
    )


def _axes(
    times: Sequence[dt.datetime], lo: float, hi: float
) -> tuple[list[str], list[str], float, float, object, object]:
    t0 = min(times).timestamp()
    t1 = max(times).timestamp()
    if t1 <= t0:
        t0, t1 = t0 - 43200, t1 + 43200
    ylo, yhi, ticks = _scale(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: dt.datetime) -> float:
        return LEFT + (at.timestamp() - t0) / (t1 - t0) * inner_w

    def y(v: float) -> float:
        return TOP + inner_h - (v - ylo) / (yhi - ylo or 1) * inner_h

    y_ticks = [
        f'<line class="grid" x1="{LEFT}" y1="{y(t):.1f}" x2="{WIDTH - RIGHT}" y2="{y(t):.1f}"/>'
        f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_number(t, step)}</text>'
        for t in ticks
    ]
    x_ticks = []
    span_days = (t1 - t0) / 86400
    fmt = (
        "%H:%M:%S"
        if span_days < 0.05
        else "%H:%M"
        if span_days < 2
        else "%d/%m"
        if span_days < 400
        else "%m/%Y"
    )
    for i in range(6):
        at = dt.datetime.fromtimestamp(t0 + (t1 - t0) * i / 5, dt.UTC)
        label = at.astimezone(ROME).strftime(fmt)
        x_ticks.append(
            f'<text x="{x(at):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{label}</text>'
        )
    return y_ticks, x_ticks, inner_w, inner_h, x, y


def thin(points: Sequence[Point], columns: int = COLUMNS) -> list[Point]:
    """At most two points a pixel column (its lowest and highest), in time order: a year of
    hourly readings draws the same line from a few hundred points as from nine thousand."""
    if len(points) <= 2 * columns:
        return list(points)
    t0, t1 = points[0].at.timestamp(), points[-1].at.timestamp()
    width = (t1 - t0) / columns or 1.0
    buckets: dict[int, list[Point]] = {}
    for p in points:
        column = min(columns - 1, int((p.at.timestamp() - t0) / width))
        buckets.setdefault(column, []).append(p)
    out: list[Point] = []
    for column in sorted(buckets):
        bucket = buckets[column]
        low = min(bucket, key=lambda p: p.value)
        high = max(bucket, key=lambda p: p.value)
        out += sorted({id(low): low, id(high): high}.values(), key=lambda p: p.at)
    return out


def svg_line(points: Sequence[Point], title: str, unit: str) -> str:
    """The index over time: a line through the readings, a dot where there are few."""
    if not points:
        return ""
    points = thin(points)
    values = [p.value for p in points]
    y_ticks, x_ticks, _w, _h, x, y = _axes([p.at for p in points], min(values), max(values))
    path = " ".join(f"{x(p.at):.1f},{y(p.value):.1f}" for p in points)  # type: ignore[operator]
    body = [f'<polyline class="line" points="{path}"/>']
    if len(points) <= 60:
        body += [
            f'<circle class="dot" cx="{x(p.at):.1f}" cy="{y(p.value):.1f}" r="2.5">'  # type: ignore[operator]
            f"<title>{p.at.astimezone(ROME):%Y-%m-%d %H:%M}: {p.value}</title></circle>"
            for p in points
        ]
    return _frame(title, unit, body, y_ticks, x_ticks)


def svg_bars(bars: Sequence[DayBar], title: str, unit: str) -> str:
    """Daily consumption: a bar a gas day, a hatched column where a day is a gap."""
    if not bars:
        return ""
    values = [b.value for b in bars if b.value is not None]
    top = max(values) if values else 1.0
    y_ticks, x_ticks, inner_w, inner_h, x, y = _axes([b.at for b in bars], 0.0, top)
    width = max(1.0, min(24.0, inner_w / max(len(bars), 1) * 0.7))
    base = y(0.0)  # type: ignore[operator]
    body = []
    for b in bars:
        left = x(b.at) - width / 2  # type: ignore[operator]
        if b.value is None:
            body.append(
                f'<rect class="gap" x="{left:.1f}" y="{TOP}" width="{width:.1f}"'
                f' height="{inner_h:.1f}" data-day="{b.day}">'
                f"<title>{b.day}: no reading, a gap</title></rect>"
            )
            continue
        high = y(b.value)  # type: ignore[operator]
        body.append(
            f'<rect class="bar" x="{left:.1f}" y="{high:.1f}" width="{width:.1f}"'
            f' height="{max(0.0, base - high):.1f}" data-day="{b.day}">'
            f"<title>{b.day}: {b.value}</title></rect>"
        )
    return _frame(title, unit, body, y_ticks, x_ticks)
