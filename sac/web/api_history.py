"""The JSON API's history routes (:mod:`sac.web.api` routes them here): one object's readings
of a meter, its consumption per gas day, and billing's export of each meter's index at a
gas month's start.  Answers are built from their declared types (:mod:`sac.web.schema`),
the same the OpenAPI document shows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from sac import gasday
from sac.errors import BadCursor
from sac.store import Connection, Meter, MonthStartIndex, Reading, UnknownMeter
from sac.store.exports import MAX_PAGE, MAX_PDRS
from sac.web import display, schema
from sac.web.api_input import query_limit, query_time, query_whole, read_query
from sac.web.errors import ApiError, json_answer
from sac.web.history import (
    MAX_DAYS,
    QUANTITIES,
    converted,
    gas_days,
    index_objects,
    object_of,
    reading_text,
    readings_page,
)

__all__ = ["daily", "month_start", "object_readings", "reading_json"]

DEFAULT_DAYS = 30  # a readings request without from= starts this long before to=


def iso(t: dt.datetime | None) -> str | None:
    """A time in the API: UTC ISO 8601 with its offset (a naive one is taken as UTC)."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).isoformat()


def unit_text(code: int | None) -> str | None:
    """A DLMS unit as the pages name it, in ASCII (``Sm3``, ``m3``, ``d``)."""
    return None if code is None else display.unit_name(code).replace("³", "3")


def _connection(c: Connection) -> schema.ConnectionOut:
    return schema.ConnectionOut(
        iso(c.started) or "",
        c.peer,
        c.kind,
        c.outcome,
        c.duration_ms,
        list(c.read),
        list(c.skipped),
        c.detail,
    )


async def connections(api: Any, request: Any, ldn: str) -> bytes:
    """The meter's sessions started in [from, to) (default: the last 30 days), oldest first,
    a page at a time."""
    query = read_query(request, ("from", "to", "after", "limit"))
    limit = query_limit(query)
    end = query_time(query, "to") or api.web.now()
    start = query_time(query, "from") or end - dt.timedelta(days=30)
    if end <= start:
        raise ApiError(400, "bad_parameter", "the range ends before it starts (from, to)")
    try:
        page = await api.store.connections.page(
            ldn, start, end, cursor=query.get("after") or None, limit=limit
        )
    except BadCursor:
        raise ApiError(400, "bad_parameter", "after is not a cursor of this list") from None
    out = schema.ConnectionsOut(await converted(page.connections, _connection), page.cursor)
    return json_answer(request, 200, msgspec.to_builtins(out))


def _month_start_index(row: MonthStartIndex) -> schema.MonthStartIndex:
    reading = row.reading
    index = reading_json(reading, "converted_volume_index", {}) if reading else None
    return schema.MonthStartIndex(ldn=row.ldn, pdr=row.pdr, index=index)


def reading_json(r: Reading, quantity: str, bits: Any) -> schema.ObjectReading:
    value = r.scaled
    flags = []
    if "diagnostic" in quantity and r.value is not None:
        flags = display.diagnostic_flags(int(r.value), bits)
    return schema.ObjectReading(
        value=None if value is None else format(value, "f"),
        unit=unit_text(r.unit),
        unit_code=r.unit,
        raw=r.raw.hex().upper() if value is None and r.raw is not None else None,
        text=reading_text(r, quantity),
        flags=flags,
        captured=iso(r.captured or r.received) or "",
        received=iso(r.received) or "",
        source=r.source,
    )


async def _meter(api: Any, ldn: str) -> Meter:
    meter: Meter | None = await api.store.meters.get(ldn)
    if meter is None:
        raise UnknownMeter(ldn)
    return meter


async def object_readings(api: Any, request: Any, ldn: str) -> bytes:
    """``GET /meters/{ldn}/readings?object=&from=&to=&limit=&after=``: one object's
    readings captured in [from, to), in capture order, in pages."""
    query = read_query(request, ("object", "from", "to", "limit", "after"))
    name = query.get("object", "")
    if name not in QUANTITIES:
        raise ApiError(400, "bad_parameter", f"object is one of {', '.join(QUANTITIES)}")
    meter = await _meter(api, ldn)
    end = query_time(query, "to") or api.web.now()
    start = query_time(query, "from") or end - dt.timedelta(days=DEFAULT_DAYS)
    limit = query_whole(query, "limit", 1000, 1, MAX_PAGE)
    obis, attribute = object_of(api.registry, meter.profile, name), QUANTITIES[name].attribute
    page = await readings_page(
        api.store,
        start,
        end,
        ldn=ldn,
        obis=obis,
        attribute=attribute,
        cursor=query.get("after"),
        limit=limit,
    )
    bits = display.profile_bits(api.registry, meter.profile)
    answer = schema.ObjectReadings(
        ldn=ldn,
        pdr=meter.pdr,
        object=name,
        obis=str(obis),
        attribute=attribute,
        readings=await converted(page.readings, lambda r: reading_json(r, name, bits)),
        next=page.cursor,
    )
    return json_answer(request, 200, answer)


def _day(query: dict[str, str], name: str) -> dt.date | None:
    if name not in query:
        return None
    try:
        return dt.date.fromisoformat(query[name])
    except ValueError:
        raise ApiError(
            400, "bad_parameter", f"{name} is a gas day's date, e.g. 2026-03-29"
        ) from None


async def daily(api: Any, request: Any, ldn: str) -> bytes:
    """``GET /meters/{ldn}/daily?from=&to=``: consumption per gas day, both days included
    (by default the last 30 whole gas days); a gap is null."""
    query = read_query(request, ("from", "to"))
    meter = await _meter(api, ldn)
    last = _day(query, "to") or gasday.gas_day_of(api.web.now()) - dt.timedelta(days=1)
    first = _day(query, "from") or last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if not 0 <= (last - first).days < MAX_DAYS:
        raise ApiError(
            400, "bad_parameter", f"from is before to, at most {MAX_DAYS} gas days apart"
        )
    return json_answer(
        request, 200, msgspec.to_builtins(await daily_answer(api, meter, first, last))
    )


async def daily_answer(
    api: Any, meter: Meter, first: dt.date, last: dt.date
) -> schema.DailyConsumption:
    obis = object_of(api.registry, meter.profile, "converted_volume_index")
    days, unit = await gas_days(api.store, meter.ldn, obis, first, last)
    rows = []
    for d in days:
        start, end = gasday.bounds(d.day)
        volume = None if d.volume is None else format(d.volume, "f")
        rows.append(
            schema.GasDay(
                day=d.day.isoformat(),
                start=start.isoformat(),
                end=end.isoformat(),
                volume=volume,
                since=iso(d.since),
                until=iso(d.until),
            )
        )
    return schema.DailyConsumption(
        ldn=meter.ldn,
        pdr=meter.pdr,
        unit=unit_text(unit if unit is not None else meter.index_unit),
        days=rows,
    )


async def month_start(api: Any, request: Any) -> bytes:
    """``GET /exports/month-start?year=&month=&pdrs=&limit=&after=``: each meter (of the
    comma-separated PDRs, else all) with its index at the gas month's start."""
    query = read_query(request, ("year", "month", "pdrs", "limit", "after"))
    if "year" not in query or "month" not in query:
        raise ApiError(400, "bad_parameter", "give the gas month: year= and month=")
    year = query_whole(query, "year", 0, 1970, 9998)
    month = query_whole(query, "month", 0, 1, 12)
    pdrs = [p for p in query["pdrs"].split(",") if p] if "pdrs" in query else None
    if pdrs is not None and len(pdrs) > MAX_PDRS:
        raise ApiError(400, "bad_parameter", f"name at most {MAX_PDRS} PDRs")
    limit = query_whole(query, "limit", 1000, 1, MAX_PAGE)
    index, by_profile = index_objects(api.registry)
    page = await api.store.exports.month_start(
        year,
        month,
        obis=index,
        by_profile=by_profile,
        pdrs=pdrs,
        cursor=query.get("after"),
        limit=limit,
    )
    answer = schema.MonthStartExport(
        year=year,
        month=month,
        month_start=gasday.month_start(year, month).isoformat(),
        rows=await converted(page.rows, _month_start_index),
        next=page.cursor,
    )
    return json_answer(request, 200, msgspec.to_builtins(answer))
