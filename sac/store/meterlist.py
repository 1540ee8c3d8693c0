"""The meter list: filtered, sorted, keyset-paginated pages of meters, and their counts."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from sac.errors import BadCursor, InvalidRequest
from sac.store.model import METER_SORTS, Meter, MeterPage, MeterQuery
from sac.store.rows import METER_COLUMNS, meter_row
from sac.store.sql import Query, Transaction

__all__ = ["connections_since", "count_meters", "list_meters", "meter_filters"]

# a meter with an open alarm, or whose diagnostic is not zero (its own alarm state): the
# predicate of the partial index meters_alarmed_ldn (0010_alarms), written as it is there so that
# SQLite's planner, which matches the terms, takes it as PostgreSQL's does
ALARMED = "(open_alarms > 0 OR (diagnostic IS NOT NULL AND diagnostic <> 0))"

# LDNs and PDRs are printable ASCII: a prefix p matches [p, p + DEL)
_AFTER_ASCII = "\x7f"


def _meter_filters(query: MeterQuery, nulls: bool | None = None) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of a query's filters, and their parameters.  ``nulls``: the rows
    are only those whose sort column is NULL (True) or only those where it is not (False);
    a filter on that column is then simpler, one range of its index rather than an OR."""
    where: list[str] = []
    params: list[Any] = []
    if query.state is not None:
        where.append("state = ?")
        params.append(query.state.value)
    if query.search:
        where.append("((ldn >= ? AND ldn < ?) OR (pdr >= ? AND pdr < ?))")
        params += [query.search, query.search + _AFTER_ASCII] * 2
    if query.valve is not None:
        where.append("valve_state = ?")
        params.append(query.valve)
    if query.alarms:
        where.append(ALARMED)
    if query.unseen_since is not None:
        if query.sort != "last_connection" or nulls is None:
            where.append("(last_connection IS NULL OR last_connection < ?)")
            params.append(query.unseen_since)
        elif not nulls:  # (a meter never heard is unseen)
            where.append("last_connection < ?")
            params.append(query.unseen_since)
    if query.changed_since is not None:
        where.append("(updated >= ? OR status_at >= ?)")
        params += [query.changed_since] * 2
    return where, params


def meter_filters(query: MeterQuery) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of the list's filters over ``meters`` and their parameters (a
    job's selection is the list's)."""
    return _meter_filters(query)


def _keeps_nulls(query: MeterQuery) -> bool:
    """Whether a meter with no value in the sort column may pass the query's filters."""
    return not (query.sort == "valve" and query.valve is not None)


def _cursor(query: MeterQuery, meter: Meter) -> str:
    """Where the next page starts: after ``meter``.  The LDN itself in LDN order (what
    callers before sorted lists knew), else [sort, the meter's value, LDN] in JSON."""
    if query.sort == "ldn":
        return meter.ldn
    value = getattr(meter, METER_SORTS[query.sort])  # Meter's fields are named as the columns
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    return json.dumps([query.sort, value, meter.ldn], separators=(",", ":"))


# the JSON types of each sort's values in a cursor (a time is ISO 8601 text)
_CURSOR_TYPES = {
    "pdr": (str,),
    "index": (int, float),
    "diagnostic": (int,),
    "battery": (int,),
    "last_connection": (str,),
    "valve": (int,),
}


def _after(query: MeterQuery, cursor: str) -> tuple[Any, str]:
    """(sort value or None, LDN) of a cursor of ``query``'s sort; ValueError for any other
    text (a cursor of another sort, a damaged link)."""
    try:
        sort, value, ldn = json.loads(cursor)
        if sort != query.sort or not isinstance(ldn, str):
            raise ValueError(sort)
        if value is not None:
            if type(value) not in _CURSOR_TYPES[sort]:  # type(): a bool is no number here
                raise ValueError(value)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError(value)  # no column holds it (SQLite would overflow)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(value)
            if sort == "last_connection":
                value = dt.datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError(value)
    except (ValueError, TypeError):
        raise BadCursor(f"not a cursor of the meter list sorted by {query.sort}") from None
    return value, ldn


def list_meters(
    after: str | None, limit: int, query: MeterQuery, total: bool = False
) -> Transaction[MeterPage]:
    """One page of the meters ``query`` matches, in its order, after the cursor ``after``:
    one indexed query, keyset-paginated (``total``: count them too).

    In an order other than the LDN's, the meters with a value come first, in the order of
    (value, LDN), then those without (NULL), in LDN order, reversed with ``descending``
    except that NULLs stay last.  Each part is one range of the (column, ldn) index, and the
    page takes from both at once (UNION ALL) when it may straddle them."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("a page holds 1 to 1000 meters")
    column = METER_SORTS[query.sort]
    desc, past = (" DESC", "<") if query.descending else ("", ">")
    order = f"{column}{desc}, ldn{desc}" if column != "ldn" else f"ldn{desc}"
    selects, values = [], []
    for i, (nulls, where, extra) in enumerate(_parts(query, after, column, past)):
        filters, params = _meter_filters(query, nulls)
        clause = " AND ".join([*filters, *where])
        selects.append(
            f"SELECT {i} AS part, {METER_COLUMNS} FROM meters"
            f"{f' WHERE {clause}' if clause else ''} ORDER BY {order} LIMIT ?"
        )
        values += [*params, *extra, limit + 1]
    if len(selects) == 1:
        sql = selects[0]
    else:  # the first part's rows, then the second's
        union = " UNION ALL ".join(f"SELECT * FROM ({s}) AS p{i}" for i, s in enumerate(selects))
        sql = f"SELECT * FROM ({union}) AS page ORDER BY part, {order} LIMIT ?"
        values.append(limit + 1)
    rows = yield Query(sql, values)
    meters = tuple(meter_row(row[1:]) for row in rows[:limit])
    next_after = _cursor(query, meters[-1]) if len(rows) > limit else None
    count = (yield from count_meters(query)) if total else None
    return MeterPage(meters, next_after, count)


def _parts(
    query: MeterQuery, after: str | None, column: str, past: str
) -> list[tuple[bool | None, list[str], list[Any]]]:
    """The parts of the order a page after ``after`` may take from: (the sort column is
    NULL in it: True, never: False, either: None; its conditions; their parameters)."""
    if column == "ldn":
        return [(None, [f"ldn {past} ?"], [after]) if after is not None else (None, [], [])]
    parts: list[tuple[bool | None, list[str], list[Any]]] = []
    value, ldn = _after(query, after) if after is not None else (None, None)
    among_nulls = after is not None and value is None
    if among_nulls and not _keeps_nulls(query):
        raise BadCursor(f"not a cursor of this meter list: it keeps no {column} NULL")
    if after is None:
        parts.append((False, [f"{column} IS NOT NULL"], []))
    elif not among_nulls:
        parts.append((False, [f"({column}, ldn) {past} (?, ?)"], [value, ldn]))
    if among_nulls:
        parts.append((True, [f"{column} IS NULL", f"ldn {past} ?"], [ldn]))
    elif _keeps_nulls(query):
        parts.append((True, [f"{column} IS NULL"], []))
    return parts


def count_meters(query: MeterQuery) -> Transaction[int]:
    """How many meters ``query``'s filters keep."""
    where, params = _meter_filters(query)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = yield Query(f"SELECT count(*) FROM meters{clause}", params)
    return int(rows[0][0])


def connections_since(since: dt.datetime) -> Transaction[int]:
    """How many meters were heard at ``since`` or later."""
    rows = yield Query("SELECT count(*) FROM meters WHERE last_connection >= ?", (since,))
    return int(rows[0][0])
