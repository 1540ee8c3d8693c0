"""Exports for other systems (billing, maintenance): readings and events between two
times, of one meter or of all, in pages that resume from a cursor.

A cursor is the position of the last row given (keyset paging), not an offset, so pages
never repeat or skip a row because rows were added elsewhere meanwhile; it also carries a
fingerprint of the query, so a cursor given to another query is refused rather than
silently misread.  Readings come per meter (in meter order), each meter's in capture order:
the way a billing system consumes them, and the order of the (meter, object, time) index.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from zope.interface import Interface, implementer

from sac import gasday
from sac.dlms import Obis
from sac.errors import BadCursor, InvalidRequest
from sac.store.events import EVENT_COLUMNS, event_row
from sac.store.model import (
    EventPage,
    ExportedReading,
    ExportPage,
    MonthStartIndex,
    MonthStartPage,
    ReadingPage,
)
from sac.store.rows import READING_VALUES, reading_row
from sac.store.sql import Component, Query, Transaction, id_of, number, stamp, when

__all__ = [
    "MAX_PAGE",
    "MAX_PDRS",
    "ExportsComponent",
    "IExports",
    "decode_cursor",
    "encode_cursor",
    "events_page",
    "exported_page",
    "month_start_page",
    "readings_page",
]

MAX_PAGE = 10_000


def _fingerprint(*parts: Any) -> str:
    text = "|".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(kind: str, fingerprint: str, *position: Any) -> str:
    text = "|".join([kind, fingerprint, *map(str, position)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, fingerprint: str, size: int) -> list[str]:
    """The ``size`` position fields of a cursor made by :func:`encode_cursor` for this kind
    of export and this query; BadCursor for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadCursor("not a cursor of this export") from None
    fields = text.split("|")
    if len(fields) != size + 2 or fields[0] != kind:
        raise BadCursor("not a cursor of this export")
    if fields[1] != fingerprint:
        raise BadCursor("the cursor belongs to another query (other times, meter or object)")
    return fields[2:]


def _row_id(text: str) -> int:
    """A row id of a cursor: what a 64-bit column holds (SQLite overflows on more)."""
    number = int(text)
    if not 0 <= number < 2**63:
        raise BadCursor("not a cursor of this export")
    return number


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise BadCursor("not a cursor of this export")
    return value


def _check(start: dt.datetime, end: dt.datetime, limit: int) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("times need their UTC offset")
    if end <= start:
        raise InvalidRequest("the range ends before it starts")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"a page holds 1 to {MAX_PAGE} rows")


def readings_page(
    start: dt.datetime,
    end: dt.datetime,
    *,
    ldn: str | None = None,
    obis: Obis | None = None,
    attribute: int | None = None,
    by_profile: Mapping[str, Obis] | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Transaction[ReadingPage]:
    """Readings captured in [start, end), of one meter (``ldn``) or all, of one object
    (``obis``, ``attribute``) or all; UnknownMeter for an unknown LDN.  ``by_profile``:
    for the meters of these profiles (by name), the object is theirs, not ``obis`` (a
    quantity some profiles keep in another object, such as the converted-volume index)."""
    rows, more = yield from _reading_rows(
        start, end, ldn, obis, attribute, by_profile, cursor, limit
    )
    objects = {text: Obis(text) for text in {row[3] for row in rows}}  # once each
    readings = tuple(reading_row(row[2], objects[row[3]], row[4], row[5:12]) for row in rows)
    return ReadingPage(readings, more, {row[2]: row[12] for row in rows})


def exported_page(
    start: dt.datetime,
    end: dt.datetime,
    *,
    ldn: str | None = None,
    obis: Obis | None = None,
    attribute: int | None = None,
    by_profile: Mapping[str, Obis] | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Transaction[ExportPage]:
    """The readings of :func:`readings_page` (the same query, the same cursor) as
    :class:`ExportedReading` tuples: for an answer that only writes them out."""
    rows, more = yield from _reading_rows(
        start, end, ldn, obis, attribute, by_profile, cursor, limit
    )
    return ExportPage(tuple(map(_exported, rows)), more)


def _exported(row: Sequence[Any]) -> ExportedReading:
    raw = row[6]
    return ExportedReading(
        row[2],
        row[3],
        row[4],
        number(row[5]),
        None if raw is None else bytes(raw),
        row[7],
        row[8],
        when(row[9]),
        stamp(row[10]),
        row[11],
        row[12],
    )


def _reading_rows(
    start: dt.datetime,
    end: dt.datetime,
    ldn: str | None,
    obis: Obis | None,
    attribute: int | None,
    by_profile: Mapping[str, Obis] | None,
    cursor: str | None,
    limit: int,
) -> Transaction[tuple[list[Any], str | None]]:
    """The rows of a page of :func:`readings_page` (id, meter id, LDN, OBIS, attribute,
    :data:`READING_VALUES`, PDR) and the cursor after them (None: the last page)."""
    _check(start, end, limit)
    odd = _odd_objects(obis, by_profile)
    fingerprint = _fingerprint(
        "r", start.isoformat(), end.isoformat(), ldn, obis, attribute, *(p for o in odd for p in o)
    )
    where, params = yield from _reading_filters(start, end, ldn, obis, attribute, odd)
    if cursor is not None:
        where.append(
            "r.meter_id >= ? AND (r.meter_id > ? OR r.captured > ?"
            " OR (r.captured = ? AND r.id > ?))"
        )
        params += _reading_after(cursor, fingerprint)
    rows = yield Query(
        f"SELECT r.id, r.meter_id, m.ldn, r.obis, r.attribute, {READING_VALUES}, m.pdr"
        " FROM readings r JOIN meters m ON m.id = r.meter_id"
        f" WHERE {' AND '.join(where)} ORDER BY r.meter_id, r.captured, r.id LIMIT ?",
        [*params, limit + 1],
    )
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    more = encode_cursor("r", fingerprint, last[1], stamp(last[9]).isoformat(), last[0])
    return rows[:limit], more


def _reading_filters(
    start: dt.datetime,
    end: dt.datetime,
    ldn: str | None,
    obis: Obis | None,
    attribute: int | None,
    odd: Sequence[tuple[str, Obis]] = (),
) -> Transaction[tuple[list[str], list[Any]]]:
    """The conditions of :func:`readings_page`'s rows and their parameters; ``odd``: the
    profiles whose meters' object is another than ``obis`` (:func:`_odd_objects`)."""
    where = ["r.captured >= ?", "r.captured < ?"]
    params: list[Any] = [start, end]
    if ldn is not None:
        where.append("r.meter_id = ?")
        params.append((yield from id_of(ldn)))
    if odd:  # the meter's profile says which object
        where.append(f"r.obis = CASE m.profile {' '.join(['WHEN ? THEN ?'] * len(odd))} ELSE ? END")
        params += [*(str(p) for pair in odd for p in pair), str(obis)]
    elif obis is not None:
        where.append("r.obis = ?")
        params.append(str(obis))
    if attribute is not None:
        where.append("r.attribute = ?")
        params.append(attribute)
    return where, params


def _odd_objects(
    obis: Obis | None, by_profile: Mapping[str, Obis] | None
) -> list[tuple[str, Obis]]:
    """(profile, object) of the profiles whose object is another than ``obis``, by name."""
    if not by_profile:
        return []
    if obis is None:
        raise InvalidRequest("an object by profile needs the object of the other meters")
    return sorted((name, other) for name, other in by_profile.items() if other != obis)


def _reading_after(cursor: str, fingerprint: str) -> list[Any]:
    """The position a readings page's ``cursor`` resumes after: (meter id, meter id,
    captured, captured, row id), as the condition of :func:`readings_page` takes them."""
    meter_text, captured_text, id_text = decode_cursor(cursor, "r", fingerprint, 3)
    try:
        meter_id, captured = _row_id(meter_text), _instant(captured_text)
        row_id = _row_id(id_text)
    except ValueError:
        raise BadCursor("not a cursor of this export") from None
    return [meter_id, meter_id, captured, captured, row_id]


def events_page(
    start: dt.datetime,
    end: dt.datetime,
    *,
    ldn: str | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Transaction[EventPage]:
    """Events that occurred in [start, end), of one meter or all, in the order they
    occurred; UnknownMeter for an unknown LDN."""
    _check(start, end, limit)
    fingerprint = _fingerprint("e", start.isoformat(), end.isoformat(), ldn)
    where = ["e.occurred >= ?", "e.occurred < ?"]
    params: list[Any] = [start, end]
    if ldn is not None:
        where.append("e.meter_id = ?")
        params.append((yield from id_of(ldn)))
    if cursor is not None:
        occurred_text, id_text = decode_cursor(cursor, "e", fingerprint, 2)
        try:
            occurred, row_id = _instant(occurred_text), _row_id(id_text)
        except ValueError:
            raise BadCursor("not a cursor of this export") from None
        where.append("(e.occurred > ? OR (e.occurred = ? AND e.id > ?))")
        params += [occurred, occurred, row_id]
    rows = yield Query(
        f"SELECT {EVENT_COLUMNS} FROM events e JOIN meters m ON m.id = e.meter_id"
        f" WHERE {' AND '.join(where)} ORDER BY e.occurred, e.id LIMIT ?",
        [*params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    events = tuple(event_row(row) for row in rows)
    next_cursor = None
    if more:
        last = events[-1]
        next_cursor = encode_cursor("e", fingerprint, last.occurred.isoformat(), last.id)
    return EventPage(events, next_cursor)


MAX_PDRS = 1000  # PDRs a month-start export may name


def month_start_page(
    year: int,
    month: int,
    *,
    obis: Obis,
    by_profile: Mapping[str, Obis] | None = None,
    pdrs: Sequence[str] | None = None,
    cursor: str | None = None,
    limit: int = 1000,
) -> Transaction[MonthStartPage]:
    """For billing, each meter (of these ``pdrs``, else every one) with the index that
    closes the gas month before ``year``-``month`` starts (:func:`sac.gasday.month_start`):
    the last ``obis`` reading captured at or before the month's start, no earlier than the
    start of the gas day that ends there (23, 24 or 25 hours: the tolerance, so that a
    meter silent for days gives no index rather than an old one).  A meter with none is
    listed without one.  By meter, resumable from the page's cursor; ``by_profile`` as for
    :func:`readings_page`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"a page holds 1 to {MAX_PAGE} rows")
    if pdrs is not None and len(pdrs) > MAX_PDRS:
        raise InvalidRequest(f"name at most {MAX_PDRS} PDRs a request")
    if not 1970 <= year <= 9998 or not 1 <= month <= 12:
        raise InvalidRequest(f"{year}-{month} is not a month of 1970 to 9998")
    first = dt.date(year, month, 1)
    at = gasday.month_start(year, month)
    since = gasday.bounds(first - dt.timedelta(days=1))[0]
    odd = _odd_objects(obis, by_profile)
    fingerprint = _fingerprint("m", year, month, obis, *(p for o in odd for p in o), pdrs)
    which = f"CASE m.profile {' '.join(['WHEN ? THEN ?'] * len(odd))} ELSE ? END" if odd else "?"
    params: list[Any] = [*(str(p) for pair in odd for p in pair), str(obis), since, at]
    where = ["1 = 1"]
    if pdrs is not None:
        where.append(f"m.pdr IN ({', '.join('?' * len(pdrs))})" if pdrs else "1 = 0")
        params += list(pdrs)
    if cursor is not None:
        where.append("m.id > ?")
        params.append(_row_id(decode_cursor(cursor, "m", fingerprint, 1)[0]))
    rows = yield Query(
        f"SELECT m.id, m.ldn, m.pdr, r.obis, r.attribute, {READING_VALUES} FROM meters m"
        " LEFT JOIN readings r ON r.id = (SELECT x.id FROM readings x WHERE x.meter_id = m.id"
        f" AND x.obis = {which} AND x.attribute = 2 AND x.captured > ? AND x.captured <= ?"
        f" ORDER BY x.captured DESC LIMIT 1) WHERE {' AND '.join(where)} ORDER BY m.id LIMIT ?",
        [*params, limit + 1],
    )
    found = tuple(
        MonthStartIndex(
            row[1],
            row[2],
            reading_row(row[1], Obis(row[3]), row[4], row[5:]) if row[3] is not None else None,
        )
        for row in rows[:limit]
    )
    more = encode_cursor("m", fingerprint, rows[limit - 1][0]) if len(rows) > limit else None
    return MonthStartPage(found, more)


class IExports(Interface):
    async def readings(
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        by_profile: Mapping[str, Obis] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ReadingPage:
        """Readings captured in [start, end), per meter then in time, resumable from the
        page's cursor; InvalidRequest for a bad range or page size, BadCursor for a cursor.
        ``by_profile``: the object of the meters of these profiles, when not ``obis``."""

    async def exported(
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        by_profile: Mapping[str, Obis] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ExportPage:
        """The page :meth:`readings` gives for the same query, as ExportedReading tuples
        with each meter's PDR (:func:`exported_page`)."""

    async def events(
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> EventPage:
        """Events that occurred in [start, end), in time order, resumable from a cursor."""

    async def month_start(
        year: int,
        month: int,
        *,
        obis: Obis,
        by_profile: Mapping[str, Obis] | None = None,
        pdrs: Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> MonthStartPage:
        """Each meter (of ``pdrs``, else all) with the index that closes the gas month
        before ``year``-``month`` (None: none captured in the gas day ending at its start),
        by meter, resumable from the page's cursor (:func:`month_start_page`)."""


@implementer(IExports)
class ExportsComponent(Component):
    async def readings(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        by_profile: Mapping[str, Obis] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ReadingPage:
        page = readings_page(
            start,
            end,
            ldn=ldn,
            obis=obis,
            attribute=attribute,
            by_profile=by_profile,
            cursor=cursor,
            limit=limit,
        )
        return await self.db.run(page)

    async def exported(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        obis: Obis | None = None,
        attribute: int | None = None,
        by_profile: Mapping[str, Obis] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> ExportPage:
        page = exported_page(
            start,
            end,
            ldn=ldn,
            obis=obis,
            attribute=attribute,
            by_profile=by_profile,
            cursor=cursor,
            limit=limit,
        )
        return await self.db.run(page)

    async def events(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        ldn: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> EventPage:
        return await self.db.run(events_page(start, end, ldn=ldn, cursor=cursor, limit=limit))

    async def month_start(
        self,
        year: int,
        month: int,
        *,
        obis: Obis,
        by_profile: Mapping[str, Obis] | None = None,
        pdrs: Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> MonthStartPage:
        page = month_start_page(
            year, month, obis=obis, by_profile=by_profile, pdrs=pdrs, cursor=cursor, limit=limit
        )
        return await self.db.run(page)
