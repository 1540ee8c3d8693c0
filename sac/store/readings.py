"""Readings, and the ingest path: what sessions bring (readings, events, each meter's list
values and last connection, the meters' counters) stored in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import Interface, implementer

from sac.dlms import Obis
from sac.errors import InvalidRequest, UnknownMeter
from sac.store.counters import accept_counters
from sac.store.events import classify
from sac.store.model import (
    Event,
    Ingest,
    IngestResult,
    MeterStatus,
    PlanMark,
    Reading,
    ReadingBuckets,
)
from sac.store.newest import newest_readings
from sac.store.plans import meter_marks, plan_marks_of, write_marks
from sac.store.rows import READING_VALUES, reading_row
from sac.store.sql import Component, InsertRows, Query, Transaction, UpdateRows, id_of, ids_of

__all__ = ["IReadings", "ReadingsComponent", "utc_offsets"]

_log = Logger()
_METER_ID_CACHE = 1_000_000  # LDNs remembered, some 100 MB at most


_READING_COLUMNS = (
    ("meter_id", "int"),
    ("obis", "text"),
    ("attribute", "int"),
    ("value", "num"),
    ("raw", "bytes"),
    ("scaler", "int"),
    ("unit", "int"),
    ("captured", "time"),
    ("received", "time"),
    ("source", "text"),
)
_EVENT_COLUMNS = (
    ("meter_id", "int"),
    ("logbook", "text"),
    ("code", "int"),
    ("occurred", "time"),
    ("counter", "int"),
    ("received", "time"),
    ("source", "text"),
    ("severity", "text"),
    ("category", "text"),
)


def ingest(batch: Ingest, ids: dict[str, int]) -> Transaction[IngestResult]:
    """Store what sessions brought, all or none: readings (history), events, and the meters'
    list values and last connection.  A reading or event already held is not stored again.

    ``ids`` is the caller's {LDN: meter id} cache (an LDN never changes meter): only the
    LDNs missing from it are looked up, and it learns them."""
    ids = yield from _learn_ids(batch, ids)
    yield from accept_counters(batch.counters, ids)
    readings = yield InsertRows(
        "readings",
        _READING_COLUMNS,
        [
            (
                ids[r.ldn],
                str(r.obis),
                r.attribute,
                r.value,
                r.raw,
                r.scaler,
                r.unit,
                r.captured,
                r.received,
                r.source,
            )
            for r in batch.readings
        ],
    )
    events, alarms = yield from _insert_events(batch.events, ids)
    yield from _update_statuses(batch.statuses, ids, alarms)
    yield from write_marks(batch.plan_marks, ids)
    pending: list[str] = []
    plans: dict[str, tuple[PlanMark, ...]] = {}
    if batch.counters:  # pushes: which of these meters have commands waiting, where are
        pushed = {ids[c.ldn] for c in batch.counters}  # they on their read plans?
        pending, plans = yield from _pushed(pushed)
    by_category: dict[str, int] = {}
    for _, category in alarms:
        by_category[category] = by_category.get(category, 0) + 1
    return IngestResult(readings, events, frozenset(pending), alarms=by_category, plans=plans)


def _insert_events(
    events: Sequence[Event], ids: dict[str, int]
) -> Transaction[tuple[int, list[tuple[int, str]]]]:
    """Store the new events, each with its class (:func:`sac.store.events.classify`); (how
    many are new, (meter id, category) of each new alarm).  The alarms go apart, returning
    their rows: an event already held is skipped, and is no new alarm."""
    rows: list[tuple[Any, ...]] = []
    alarm_rows: list[tuple[Any, ...]] = []
    for e in events:
        severity, category = classify(e)
        row = (
            ids[e.ldn],
            str(e.logbook),
            e.code,
            e.occurred,
            e.counter,
            e.received,
            e.source,
            severity,
            category,
        )
        (alarm_rows if severity == "alarm" else rows).append(row)
    count: int = (yield InsertRows("events", _EVENT_COLUMNS, rows)) if rows else 0
    alarms: list[tuple[int, str]] = []
    if alarm_rows:
        returned = yield InsertRows(
            "events", _EVENT_COLUMNS, alarm_rows, returning="meter_id, category"
        )
        alarms = [(int(meter_id), category) for meter_id, category in returned]
    return count + len(alarms), alarms


def _learn_ids(batch: Ingest, ids: dict[str, int]) -> Transaction[dict[str, int]]:
    """{LDN: meter id} of the meters of ``batch``, this transaction's own (a change of a
    meter told meanwhile withdraws it from the cache ``ids``, not from under this
    transaction); the ids ``ids`` lacks are looked up and taught to it.  UnknownMeter for a
    meter that is not in the store."""
    ldns = {r.ldn for r in batch.readings} | {e.ldn for e in batch.events}
    ldns |= {s.ldn for s in batch.statuses} | {c.ldn for c in batch.counters}
    ldns |= {m.ldn for m in batch.plan_marks}
    own = {ldn: ids[ldn] for ldn in ldns if ldn in ids}
    unknown = ldns - own.keys()
    if unknown:
        found = yield from ids_of(unknown)
        missing = sorted(unknown - found.keys())
        if missing:
            raise UnknownMeter(missing[0])
        ids.update(found)
        own.update(found)
    return own


def _pushed(
    meter_ids: set[int],
) -> Transaction[tuple[list[str], dict[str, tuple[PlanMark, ...]]]]:
    """Of the pushing meters ``meter_ids``: the LDNs of the active ones with commands waiting
    (their sessions claim them), and where each stands on its read plan -- one statement, one
    round trip on the push path."""
    pushed = sorted(meter_ids)
    marks = ", ".join("?" * len(pushed))
    # (no DISTINCT: it would type the NULLs as text before the union meets the marks' types;
    # a meter with many commands waiting comes back as many rows, one LDN in Python)
    rows = yield Query(
        "SELECT m.ldn, 1, p.quantity, p.read_at, p.counter, p.newest"
        f" FROM read_plan_state p JOIN meters m ON m.id = p.meter_id WHERE p.meter_id IN ({marks})"
        " UNION ALL SELECT m.ldn, 0, NULL, NULL, NULL, NULL FROM commands c"
        " JOIN meters m ON m.id = c.meter_id"
        " WHERE c.state = 'pending' AND m.state = 'active'"  # (disabled meanwhile: none)
        f" AND c.meter_id IN ({marks})",
        [*pushed, *pushed],
    )
    pending = sorted({ldn for ldn, kind, *_ in rows if kind == 0})
    return pending, plan_marks_of([row[:1] + row[2:] for row in rows if row[1] == 1])


# the list values of a meter: (column, kind) in the order _status_row gives them
_STATUS_COLUMNS = (
    ("id", "int"),
    ("connected", "time"),
    ("values_at", "time"),
    ("values_recv", "time"),
    ("diagnostic", "int"),
    ("battery_value", "int"),
    ("battery_unit", "int"),
    ("valve_state", "int"),
    ("index_at", "time"),
    ("index_recv", "time"),
    ("index_value", "num"),
    ("index_scaler", "int"),
    ("index_unit", "int"),
    ("address", "text"),
    ("alarms", "int"),
)


def _newer(stamp: str, new: str, targets: Sequence[str]) -> list[str]:
    """SET items: each target takes its new value (when it has one) if ``new`` is not older
    than the stored ``stamp``; else it stays as it is."""
    fresh = f"v.{new} IS NOT NULL AND (meters.{stamp} IS NULL OR meters.{stamp} <= v.{new})"
    return [
        f"{target} = CASE WHEN {fresh} AND v.{source} IS NOT NULL THEN v.{source}"
        f" ELSE meters.{target} END"
        for target, source in ((t.split(":")[0], t.split(":")[-1]) for t in targets)
    ]


_STATUS_SETS = ", ".join(
    [
        # the new alarms stored with them (sac.store.events: the open alarms counted)
        "open_alarms = meters.open_alarms + v.alarms",
        # the address goes with the connection it was heard on
        *_newer("last_connection", "connected", ["last_address:address"]),
        *_newer("last_connection", "connected", ["last_connection:connected"]),
        # newer by the SAC's receipt time; the meter's capture time goes along, to be shown
        *_newer(
            "values_received",
            "values_recv",
            [
                "diagnostic",
                "battery_value",
                "battery_unit",
                "valve_state",
                "status_at:values_at",
                "values_received:values_recv",
            ],
        ),
        *_newer(
            "index_received",
            "index_recv",
            [
                "index_value",
                "index_scaler",
                "index_unit",
                "index_captured:index_at",
                "index_received:index_recv",
            ],
        ),
    ]
)


def _status_row(meter_id: int, status: MeterStatus) -> tuple[Any, ...]:
    """The row of :data:`_STATUS_COLUMNS` for one meter status (None: leave as it is)."""
    values = (
        status.diagnostic,
        status.battery_value,
        status.battery_unit if status.battery_value is not None else None,
        status.valve_state,
    )
    at = received = None
    if any(v is not None for v in values):
        at = status.at or status.connected
        received = status.connected or status.at
        if at is None:
            raise ValueError("a meter status with values needs a time (at or connected)")
    index = status.index
    index_row: tuple[Any, ...] = (None, None, None, None, None)
    if index is not None:
        stamp = index.captured or status.at or status.connected
        if stamp is None or index.value is None:
            raise ValueError("the index of a meter status needs a value and a time")
        index_recv = status.connected or index.received or stamp
        index_row = (stamp, index_recv, index.value, index.scaler, index.unit)
    return (meter_id, status.connected, at, received, *values, *index_row, status.address)


def _update_statuses(
    statuses: Sequence[MeterStatus], ids: dict[str, int], alarms: Sequence[tuple[int, str]] = ()
) -> Transaction[None]:
    """Move meters' list values forward, never back to an older value, and count their new
    ``alarms`` (meter id, category) open: one statement for all, when no meter appears
    twice (one a statement otherwise, in order).  Sorted: every ingest locks the meters'
    rows in one order, so two of them never deadlock."""
    new_alarms: dict[int, int] = {}
    for meter_id, _ in alarms:
        new_alarms[meter_id] = new_alarms.get(meter_id, 0) + 1
    rows = []
    for s in statuses:
        meter_id = ids[s.ldn]
        rows.append((*_status_row(meter_id, s), new_alarms.pop(meter_id, 0)))
    rows += [(*_status_row(m, MeterStatus("")), n) for m, n in new_alarms.items()]
    unique = len({r[0] for r in rows}) == len(rows)
    for group in [sorted(rows)] if unique else [[r] for r in rows]:  # sorted: one lock order
        if group:
            yield UpdateRows("meters", "id", _STATUS_COLUMNS, group, _STATUS_SETS)


def last_readings(ldn: str, obis: Obis, attribute: int, limit: int) -> Transaction[list[Reading]]:
    """The ``limit`` latest readings of one attribute of one meter, newest first."""
    rows = yield Query(
        f"SELECT {READING_VALUES} FROM readings r JOIN meters m ON m.id = r.meter_id"
        " WHERE m.ldn = ? AND r.obis = ? AND r.attribute = ?"
        " ORDER BY r.captured DESC, r.id DESC LIMIT ?",
        (ldn, str(obis), attribute, limit),
    )
    return [reading_row(ldn, obis, attribute, row) for row in rows]


def readings_between(
    ldn: str,
    obis: Obis,
    attribute: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    limit: int,
) -> Transaction[list[Reading]]:
    """One attribute of one meter captured in [start, end) (a bound None: open), oldest
    first; the newest ``limit`` when there are more.  A reading without a capture time has
    no place on a time axis and is left out."""
    if limit < 1:
        raise InvalidRequest("ask for at least one reading")
    meter_id = yield from id_of(ldn)
    where = ["r.meter_id = ?", "r.obis = ?", "r.attribute = ?", "r.captured IS NOT NULL"]
    params: list[Any] = [meter_id, str(obis), attribute]
    if start is not None:
        where.append("r.captured >= ?")
        params.append(start)
    if end is not None:
        where.append("r.captured < ?")
        params.append(end)
    rows = yield Query(
        f"SELECT {READING_VALUES} FROM readings r WHERE {' AND '.join(where)}"
        " ORDER BY r.captured DESC LIMIT ?",
        [*params, limit],
    )
    return [reading_row(ldn, obis, attribute, row) for row in reversed(rows)]


def _differs(column: str) -> str:
    """SQL true where ``column`` differs from the reading before (a NULL on one side only
    differs; both NULL does not), the same on both backends."""
    return f"({column} <> before_{column} OR ({column} IS NULL) <> (before_{column} IS NULL))"


def reading_changes(
    ldn: str,
    obis: Obis,
    attribute: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    limit: int,
) -> Transaction[list[Reading]]:
    """The readings of one attribute of one meter captured in [start, end) whose value
    differs from the one captured before it (the first of the range always counts), oldest
    first; the newest ``limit`` when there are more: a value's history as a table of
    changes (a PDR, a diagnostic, a valve state), whatever the number of readings that
    repeated it."""
    if limit < 1:
        raise InvalidRequest("ask for at least one reading")
    meter_id = yield from id_of(ldn)
    where = ["meter_id = ?", "obis = ?", "attribute = ?", "captured IS NOT NULL"]
    params: list[Any] = [meter_id, str(obis), attribute]
    for bound, sign in ((start, ">="), (end, "<")):
        if bound is not None:
            where.append(f"captured {sign} ?")
            params.append(bound)
    rows = yield Query(
        f"SELECT {READING_VALUES} FROM readings r WHERE r.id IN (SELECT id FROM ("
        "SELECT id, value, raw, row_number() OVER w AS k,"
        " lag(value) OVER w AS before_value, lag(raw) OVER w AS before_raw"
        f" FROM readings WHERE {' AND '.join(where)} WINDOW w AS (ORDER BY captured, id)) c"
        f" WHERE c.k = 1 OR {_differs('value')} OR {_differs('raw')})"
        " ORDER BY r.captured DESC, r.id DESC LIMIT ?",
        [*params, limit],
    )
    return [reading_row(ldn, obis, attribute, row) for row in reversed(rows)]


def reading_buckets(
    ldn: str,
    obis: Obis,
    attribute: int,
    start: dt.datetime,
    end: dt.datetime,
    width: int,
    zone: dt.tzinfo = dt.UTC,
    day_start: dt.timedelta = dt.timedelta(),
    closing: bool = False,
) -> Transaction[ReadingBuckets]:
    """One attribute of one meter captured in [start, end), cut into buckets of ``width``
    seconds that start at midnight in ``zone`` (so a day's bucket is that zone's calendar
    day, on either side of a daylight-saving change), or ``day_start`` after it (06:00:
    the gas day): the last reading of each, found by the database, so a year of hourly
    readings costs a few hundred rows, not 8,760.

    ``closing``: a bucket is ``(from, to]`` rather than ``[from, to)``: a reading captured at
    a bucket's start closes the bucket before (a meter's daily capture at 06:00 closes the
    gas day that ends then, :func:`sac.gasday.closing_day`).  Times count in whole seconds
    there: a capture a fraction of a second after a start still closes the bucket before."""
    if width < 1:
        raise InvalidRequest("a bucket lasts at least one second")
    if end <= start:
        raise InvalidRequest("the range ends before it starts")
    if not dt.timedelta() <= day_start < dt.timedelta(seconds=width):
        raise InvalidRequest("a bucket starts within its own width of midnight")
    meter_id = yield from id_of(ldn)
    # seconds to add to a UTC time to get the zone's wall-clock time, for each stretch of
    # the range with one offset (the CASE picks it per reading)
    shifts = utc_offsets(start, end, zone)
    whens = " ".join(f"WHEN captured < ? THEN {offset}" for _, offset in shifts[:-1])
    case = f"CASE {whens} ELSE {shifts[-1][1]} END" if whens else str(shifts[0][1])
    # whole seconds from each bucket's start (a closing bucket: a second later, so that a
    # reading at its start falls in the bucket before)
    shift = int(day_start.total_seconds()) + (1 if closing else 0)
    where = (
        "meter_id = ? AND obis = ? AND attribute = ? AND captured >= ? AND captured < ?",
        [meter_id, str(obis), attribute, start, end],
    )
    # the window sorts narrow rows (ids), then the few chosen are read whole
    rows = yield Query(
        f"SELECT {READING_VALUES} FROM readings r WHERE r.id IN (SELECT id FROM ("
        f"SELECT id, row_number() OVER (PARTITION BY (unixepoch(captured) + {case}"
        f" - {shift}) / {int(width)} ORDER BY captured DESC, id DESC) AS k"
        f" FROM readings WHERE {where[0]}) b WHERE b.k = 1) ORDER BY r.captured",
        [*(since for since, _ in shifts[1:]), *where[1]],
    )
    total = yield Query(f"SELECT count(*) FROM readings WHERE {where[0]}", where[1])
    return ReadingBuckets(
        tuple(reading_row(ldn, obis, attribute, row) for row in rows), total[0][0]
    )


def utc_offsets(
    start: dt.datetime, end: dt.datetime, zone: dt.tzinfo
) -> list[tuple[dt.datetime, int]]:
    """The stretches of [start, end) with one UTC offset in ``zone``: (from when, offset in
    seconds), the first from ``start``.  Days are stepped, then a change found to the minute."""

    def offset(at: dt.datetime) -> int:
        return int((at.astimezone(zone).utcoffset() or dt.timedelta()).total_seconds())

    out = [(start, offset(start))]
    day = dt.timedelta(days=1)
    at = start
    while at < end:
        following = min(at + day, end)
        if offset(following) != out[-1][1]:
            lo, hi = at, following  # offset(lo) is the old one, offset(hi) the new
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if offset(mid) == out[-1][1] else (lo, mid)
            out.append((hi.replace(second=0, microsecond=0), offset(hi)))
        at = following
    return out


def count_readings() -> Transaction[int]:
    rows = yield Query("SELECT count(*) FROM readings")
    return int(rows[0][0])


class IReadings(Interface):
    async def add(readings: Sequence[Reading]) -> int:
        """Store a batch of readings of many meters in one transaction (all or none); the
        number of new ones (a reading already held is not stored twice)."""

    async def ingest(batch: Ingest) -> IngestResult:
        """Store what sessions brought in one transaction: readings, events, and each meter's
        list values and last connection (moved forward only)."""

    async def last(ldn: str, obis: Obis, attribute: int = 2, limit: int = 1) -> list[Reading]:
        """The latest readings of one attribute of one meter, newest first."""

    async def between(
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 100_000,
    ) -> list[Reading]:
        """One attribute of one meter captured in [start, end) (a bound None: open), oldest
        first; the newest ``limit`` when there are more.  UnknownMeter for an unknown LDN."""

    async def buckets(
        ldn: str,
        obis: Obis,
        attribute: int,
        start: dt.datetime,
        end: dt.datetime,
        width: int,
        zone: dt.tzinfo = dt.UTC,
        day_start: dt.timedelta = dt.timedelta(),
        closing: bool = False,
    ) -> ReadingBuckets:
        """[start, end) of one attribute of one meter cut into buckets of ``width`` seconds
        from midnight in ``zone`` (or ``day_start`` after it; ``closing``: a reading at a
        bucket's start belongs to the bucket before): the last reading of each, and how
        many the range holds.  For charts and gas days: the database does the thinning.
        UnknownMeter for an unknown LDN."""

    async def changes(
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 200,
    ) -> list[Reading]:
        """The readings of [start, end) whose value differs from the one before (the first
        always counts), oldest first; the newest ``limit``.  UnknownMeter for an unknown
        LDN."""

    async def newest(
        ldn: str, pairs: Collection[tuple[Obis, int]]
    ) -> dict[tuple[Obis, int], Reading]:
        """{(obis, attribute): its newest reading} of one meter, of those of ``pairs`` it
        has read, in one query (:mod:`sac.store.newest`)."""

    async def count() -> int:
        """How many readings the store holds."""

    async def plan_marks(ldn: str) -> tuple[PlanMark, ...]:
        """Where a meter stands on its read plan (none for a meter never read)."""


@implementer(IReadings)
class ReadingsComponent(Component):
    # told what each committed ingest stored, when set (sac.tap: the alarms counted,
    # sac.services.ingest.count_alarms); a failure there is not the ingest's
    observe_ingest: Callable[[IngestResult], None] | None = None

    async def add(self, readings: Sequence[Reading]) -> int:
        return (await self.ingest(Ingest(readings=readings))).readings

    async def ingest(self, batch: Ingest) -> IngestResult:
        if not (
            batch.readings or batch.events or batch.statuses or batch.counters or batch.plan_marks
        ):
            return IngestResult(0, 0)
        if len(self.db.meter_ids) > _METER_ID_CACHE:
            self.db.meter_ids.clear()
        result = await self.db.run(ingest(batch, self.db.meter_ids))
        if self.observe_ingest is not None and result.alarms:
            try:
                self.observe_ingest(result)
            except Exception:
                _log.failure("the observer of ingests failed")
        return result

    async def last(self, ldn: str, obis: Obis, attribute: int = 2, limit: int = 1) -> list[Reading]:
        return await self.db.run(last_readings(ldn, obis, attribute, limit))

    async def between(
        self,
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 100_000,
    ) -> list[Reading]:
        return await self.db.run(readings_between(ldn, obis, attribute, start, end, limit))

    async def buckets(
        self,
        ldn: str,
        obis: Obis,
        attribute: int,
        start: dt.datetime,
        end: dt.datetime,
        width: int,
        zone: dt.tzinfo = dt.UTC,
        day_start: dt.timedelta = dt.timedelta(),
        closing: bool = False,
    ) -> ReadingBuckets:
        change = reading_buckets(ldn, obis, attribute, start, end, width, zone, day_start, closing)
        return await self.db.run(change)

    async def changes(
        self,
        ldn: str,
        obis: Obis,
        attribute: int = 2,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: int = 200,
    ) -> list[Reading]:
        return await self.db.run(reading_changes(ldn, obis, attribute, start, end, limit))

    async def newest(
        self, ldn: str, pairs: Collection[tuple[Obis, int]]
    ) -> dict[tuple[Obis, int], Reading]:
        return await self.db.run(newest_readings(ldn, pairs))

    async def count(self) -> int:
        return await self.db.run(count_readings())

    async def plan_marks(self, ldn: str) -> tuple[PlanMark, ...]:
        return await self.db.run(meter_marks(ldn))
