"""A meter's objects and their history, as the page, the JSON API and SOAP give them: the
eight objects the specification lists (less the connections, kept apart), where each
meter's profile keeps them, how a stored value reads, and the consumption per gas day.

The daily consumption is per gas day, 06:00 to 06:00 Europe/Rome (:mod:`sac.gasday`): the
store finds the last index of each gas day (a capture at 06:00 closes the day before), and a
day without one on either side is a gap (None), never folded into the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred

from sac import gasday
from sac.dlms import Obis
from sac.dlms.axdr import decode_data
from sac.errors import CodecError
from sac.store import Reading, ReadingPage
from sac.web import display

__all__ = [
    "MAX_DAYS",
    "QUANTITIES",
    "Quantity",
    "converted",
    "day_rows",
    "gas_days",
    "index_objects",
    "object_of",
    "reading_slices",
    "reading_text",
    "readings_page",
]

MAX_DAYS = 400  # gas days a daily-consumption request may span
STORE_SLICE = 1000  # readings a query of readings_page: on PostgreSQL ~15 ms of the reactor
STEP = 500  # rows converted between two turns of the reactor: a few ms of it
T = TypeVar("T")
U = TypeVar("U")
SECONDS_A_DAY = 86400


@dataclass(frozen=True, slots=True)
class Quantity:
    """One object of a meter whose history is kept: its name in the profiles' catalogue,
    the attribute read, what it is in words, and how its history shows (``chart``: a
    number over time; else a table of its changes)."""

    name: str
    attribute: int
    label: str
    chart: bool = False


QUANTITIES: Mapping[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("ldn", 2, "LDN"),
        Quantity("pdr", 2, "PDR"),
        Quantity("converted_volume_index", 2, "Converted-volume index", chart=True),
        Quantity("converted_volume_index_under_alarm", 2, "Index under alarm", chart=True),
        Quantity("current_diagnostic", 2, "Current diagnostic"),
        Quantity("daily_diagnostic", 2, "Daily diagnostic"),
        Quantity("battery_autonomy", 2, "Battery autonomy", chart=True),
        Quantity("valve", 3, "Valve state"),
    )
}


def object_of(registry: Any, profile: str | None, quantity: str) -> Obis:
    """Where a meter of ``profile`` keeps ``quantity`` (the generic catalogue's object for
    what the profile does not name)."""
    return registry.objects_of(profile)[quantity].obis


def index_objects(registry: Any) -> tuple[Obis, dict[str, Obis]]:
    """The converted-volume index: the generic catalogue's object (a meter of no profile,
    or of one not installed), and each installed profile's (a profile may keep it
    elsewhere)."""
    name = "converted_volume_index"
    by_profile = {p: registry.objects_of(p)[name].obis for p in registry.profiles}
    return registry.objects_of(None)[name].obis, by_profile


def _decoded(raw: bytes) -> str:
    """A stored value that is not a number, as text: a string as itself, other bytes in
    hex, what does not decode as its hex too."""
    try:
        value = decode_data(raw)
    except CodecError:
        return raw.hex().upper()
    if isinstance(value, bytes):
        text = bytes(value).decode("ascii", "replace")
        return text if text.isprintable() and value else bytes(value).hex().upper()
    return str(value)


def reading_text(reading: Reading, quantity: str) -> str:
    """A stored reading of ``quantity`` as an operator reads it (a diagnostic's bits are
    named by :func:`sac.web.display.diagnostic_flags`)."""
    if reading.value is None:
        return _decoded(reading.raw) if reading.raw is not None else "—"
    value = int(reading.value) if float(reading.value).is_integer() else None
    if quantity in ("current_diagnostic", "daily_diagnostic") and value is not None:
        return display.diagnostic(value, {})  # OK, or the bitmask: its bits named apart
    if quantity == "valve" and value is not None:
        return display.valve_name(value)
    if quantity == "battery_autonomy" and reading.scaler in (None, 0) and value is not None:
        return display.battery(value, reading.unit)
    return display.quantity(reading.value, reading.scaler, reading.unit)


async def gas_days(
    store: Any, ldn: str, obis: Obis, first: dt.date, last: dt.date
) -> tuple[list[gasday.DailyConsumption], int | None]:
    """One row per gas day from ``first`` to ``last``, from the last index the store holds
    for each (and for the day before ``first``): the database picks them, one a day; and
    the DLMS unit of those indexes (None: no index)."""
    lo = gasday.bounds(first - dt.timedelta(days=1))[0] + dt.timedelta(microseconds=1)
    hi = gasday.bounds(last)[1] + dt.timedelta(microseconds=1)
    closing = await store.readings.buckets(
        ldn,
        obis,
        2,
        lo,
        hi,
        SECONDS_A_DAY,
        gasday.ROME,
        dt.timedelta(hours=gasday.START.hour),
        True,
    )
    points = [(r.captured, r.scaled) for r in closing.readings if r.scaled is not None]
    unit = closing.readings[-1].unit if closing.readings else None
    return gasday.daily_consumption(points, first, last), unit


def day_rows(days: Sequence[gasday.DailyConsumption], scaler: int | None) -> list[dict[str, Any]]:
    """Gas days as the page's table shows them, newest first; a gap says so."""
    places = max(0, -(scaler or 0))
    return [
        dict(
            day=d.day,
            volume=None if d.volume is None else f"{d.volume:,.{places}f}".replace(",", "\u202f"),
            since=d.since,
            until=d.until,
        )
        for d in reversed(days)
    ]


async def reading_slices(
    store: Any,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int = 1000,
    cursor: str | None = None,
    exported: bool = False,
    **query: Any,
) -> AsyncIterator[Any]:
    """The page ``store.exports.readings(start, end, limit=, cursor=, **query)`` gives
    (``exported``: ``store.exports.exported``'s, ExportedReading tuples), as queries of at
    most :data:`STORE_SLICE` readings, each resuming from the one before's cursor: together
    the same readings and PDRs, and the last one's cursor is the page's (the cursor is a
    position; its fingerprint leaves the page size out).  On PostgreSQL rows become
    Readings on the reactor thread: 10,000 at once held it about 150 ms (issue 23).  The
    next slice is asked before this one is given, so that the database works while the
    caller converts this one."""
    method = store.exports.exported if exported else store.exports.readings

    def ask(after: str | None, size: int) -> Deferred[Any]:
        return ensureDeferred(method(start, end, cursor=after, limit=size, **query))

    pending: Deferred[Any] | None = ask(cursor, min(STORE_SLICE, limit))
    left = limit
    try:
        while pending is not None:
            page = await pending
            pending = None
            left -= len(page.readings)
            if page.cursor is not None and left > 0:
                pending = ask(page.cursor, min(STORE_SLICE, left))
            yield page
    finally:
        if pending is not None:  # the caller stopped early: the slice asked is not wanted
            pending.addErrback(lambda _: None)


async def readings_page(
    store: Any, start: dt.datetime, end: dt.datetime, **query: Any
) -> ReadingPage:
    """The page of :func:`reading_slices`, whole."""
    readings: list[Reading] = []
    pdrs: dict[str, str | None] = {}
    cursor: str | None = None
    async for page in reading_slices(store, start, end, **query):
        readings += page.readings
        pdrs.update(page.pdrs)
        cursor = page.cursor
    return ReadingPage(tuple(readings), cursor, pdrs)


async def converted(rows: Sequence[T], convert: Callable[[T], U]) -> list[U]:
    """``[convert(row) for row in rows]`` on the reactor, :data:`STEP` rows at a time, the
    reactor handed back between two (a turn of its loop: the pushes and the other requests
    that wait run), so that a page of 10,000 readings does not stop them meanwhile (issue
    23).  A count of rows, not a clock: how often the reactor comes back does not depend on
    the machine's speed or load."""
    done: list[U] = []
    for start in range(0, len(rows), STEP):
        if start:
            await _turn()
        done.extend(map(convert, rows[start : start + STEP]))
    return done


def _turn() -> Deferred[None]:
    """Fires on the reactor's next turn, after the I/O and the calls that wait now."""
    from twisted.internet import reactor

    turn: Deferred[None] = Deferred()
    reactor.callLater(0, turn.callback, None)
    return turn
