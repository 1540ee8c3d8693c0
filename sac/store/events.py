"""Events and alarms: what meters' logbooks recorded (the ingest path writes them with the
readings, :mod:`sac.store.readings`), and the operators' acknowledgements of the alarms.

An event of severity ``alarm`` is an open alarm until an operator acknowledges it: who, when,
a note, and a line of the audit trail, in one transaction.  Each meter's row counts its open
alarms (``meters.open_alarms``: the ingest adds the new ones, an acknowledgement takes them
away), so that the meter list's "with alarms" filter reads the meters alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from zope.interface import Interface, implementer

from sac.dlms import Obis
from sac.errors import AlreadyAcknowledged, BadCursor, InvalidRequest, UnknownAlarm
from sac.eventcodes import Category, describe
from sac.store.audit import audit, audited
from sac.store.model import Acknowledgement, Actor, AlarmCount, AlarmPage, Event
from sac.store.sql import Component, Exec, Query, Transaction, id_of, stamp

__all__ = [
    "EVENT_COLUMNS",
    "MAX_NOTE",
    "EventsComponent",
    "IEvents",
    "event_row",
]

MAX_NOTE = 1000  # characters of an acknowledgement's note
MAX_ALARMS_PAGE = 1000
CATEGORIES = frozenset(c.value for c in Category)

# an event's columns, as event_row reads them (e: events, m: meters)
EVENT_COLUMNS = (
    "m.ldn, e.logbook, e.code, e.occurred, e.received, e.source, e.counter, e.severity,"
    " e.category, e.id, e.acknowledged, e.acknowledged_by, e.note"
)

# an alarm no operator acknowledged yet (the condition of the partial indexes of 0010_alarms)
OPEN = "e.severity = 'alarm' AND e.acknowledged IS NULL"


def event_row(row: Sequence[Any]) -> Event:
    """An event of the :data:`EVENT_COLUMNS`; one stored before classes were kept (NULL)
    is classed now, by the UNI/TS table (and is no alarm to acknowledge: see 0010_alarms)."""
    ldn, logbook, code, occurred, received, source, counter, severity, category = row[:9]
    event_id, acknowledged, by, note = row[9:13]
    ack = Acknowledgement(by, stamp(acknowledged), note) if acknowledged is not None else None
    return Event(
        ldn,
        Obis(logbook),
        code,
        stamp(occurred),
        stamp(received),
        source,
        counter,
        severity,
        category,
        event_id,
        ack,
    )


def latest_events(ldn: str, limit: int) -> Transaction[list[Event]]:
    """A meter's latest events, newest first."""
    rows = yield Query(
        f"SELECT {EVENT_COLUMNS} FROM events e JOIN meters m ON m.id = e.meter_id"
        " WHERE m.ldn = ? ORDER BY e.occurred DESC, e.id DESC LIMIT ?",
        (ldn, limit),
    )
    return [event_row(row) for row in rows]


def _position(cursor: str) -> tuple[dt.datetime, int]:
    """(occurred, id) of an open-alarms cursor: ``<ISO time>~<id>``."""
    occurred_text, _, id_text = cursor.rpartition("~")
    try:
        occurred, alarm_id = dt.datetime.fromisoformat(occurred_text), int(id_text)
    except ValueError:
        raise BadCursor("not a cursor of the open alarms") from None
    if occurred.tzinfo is None or not 0 <= alarm_id < 2**63:
        raise BadCursor("not a cursor of the open alarms")
    return occurred, alarm_id


def open_alarms(
    ldn: str | None, category: str | None, cursor: str | None, limit: int
) -> Transaction[AlarmPage]:
    """The open alarms, newest first (of one meter, of one category), a page after
    ``cursor``; UnknownMeter for an unknown LDN."""
    if not 1 <= limit <= MAX_ALARMS_PAGE:
        raise InvalidRequest(f"a page holds 1 to {MAX_ALARMS_PAGE} alarms")
    if category is not None and category not in CATEGORIES:
        raise InvalidRequest(f"a category is one of {', '.join(sorted(CATEGORIES))}")
    where: list[str] = [OPEN]
    params: list[Any] = []
    if ldn is not None:
        where.append("e.meter_id = ?")
        params.append((yield from id_of(ldn)))
    if category is not None:
        where.append("e.category = ?")
        params.append(category)
    if cursor is not None:
        occurred, alarm_id = _position(cursor)
        where.append("(e.occurred < ? OR (e.occurred = ? AND e.id < ?))")
        params += [occurred, occurred, alarm_id]
    rows = yield Query(
        f"SELECT {EVENT_COLUMNS} FROM events e JOIN meters m ON m.id = e.meter_id"
        f" WHERE {' AND '.join(where)} ORDER BY e.occurred DESC, e.id DESC LIMIT ?",
        [*params, limit + 1],
    )
    alarms = tuple(event_row(row) for row in rows[:limit])
    after = None
    if len(rows) > limit:
        after = f"{alarms[-1].occurred.isoformat()}~{alarms[-1].id}"
    return AlarmPage(alarms, after)


def alarm_counts() -> Transaction[list[AlarmCount]]:
    """The open alarms by category: how many, on how many meters; most alarms first."""
    rows = yield Query(
        "SELECT e.category, count(*), count(DISTINCT e.meter_id) FROM events e"
        f" WHERE {OPEN} GROUP BY e.category"
    )
    counts = [AlarmCount(category or "unknown", int(n), int(m)) for category, n, m in rows]
    return sorted(counts, key=lambda c: (-c.alarms, c.category))


def open_counts(ldns: Sequence[str]) -> Transaction[dict[str, int]]:
    """{LDN: open alarms} of the meters among ``ldns`` that have any (a page of the list)."""
    if not ldns:
        return {}
    wanted = sorted(set(ldns))[:1000]
    rows = yield Query(
        f"SELECT ldn, open_alarms FROM meters WHERE ldn IN ({', '.join('?' * len(wanted))})"
        " AND open_alarms > 0",
        wanted,
    )
    return {ldn: int(n) for ldn, n in rows}


def _note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    if len(note) > MAX_NOTE:
        raise InvalidRequest(f"a note is at most {MAX_NOTE} characters")
    return note.strip()


def acknowledge_one(
    alarm_id: int, by: str, note: str | None, now: dt.datetime
) -> Transaction[Event]:
    """Acknowledge one open alarm; UnknownAlarm when no alarm has this id,
    AlreadyAcknowledged when an operator did before (who and when said)."""
    if not 0 <= alarm_id < 2**63:
        raise UnknownAlarm(alarm_id)
    changed = yield Query(
        "UPDATE events SET acknowledged = ?, acknowledged_by = ?, note = ?"
        " WHERE id = ? AND severity = 'alarm' AND acknowledged IS NULL RETURNING meter_id",
        (now, by, note, alarm_id),
    )
    found = yield Query(
        f"SELECT {EVENT_COLUMNS} FROM events e JOIN meters m ON m.id = e.meter_id WHERE e.id = ?",
        (alarm_id,),
    )
    if not found or found[0][7] != "alarm":
        raise UnknownAlarm(alarm_id)
    event = event_row(found[0])  # as it is now: acknowledged
    ack = event.acknowledgement
    assert ack is not None
    if not changed:
        raise AlreadyAcknowledged(
            f"alarm {alarm_id} was acknowledged by {ack.by} at {ack.at.isoformat()}"
        )
    yield Exec("UPDATE meters SET open_alarms = open_alarms - 1 WHERE id = ?", (changed[0][0],))
    return event


def acknowledge_meter(ldn: str, by: str, note: str | None, now: dt.datetime) -> Transaction[int]:
    """Acknowledge every open alarm of a meter; how many; UnknownMeter for an unknown LDN."""
    meter_id = yield from id_of(ldn)
    count = yield Exec(
        "UPDATE events SET acknowledged = ?, acknowledged_by = ?, note = ?"
        " WHERE meter_id = ? AND severity = 'alarm' AND acknowledged IS NULL",
        (now, by, note, meter_id),
    )
    if count:
        yield Exec(
            "UPDATE meters SET open_alarms = open_alarms - ? WHERE id = ?", (count, meter_id)
        )
    return int(count)


def classify(event: Event) -> tuple[str, str]:
    """(severity, category) of an event about to be stored: as the services layer set them
    (from the meter's profile), else by the UNI/TS table."""
    if event.severity is not None and event.category is not None:
        return event.severity, event.category
    kind = describe(event.code)
    return event.severity or kind.severity.value, event.category or kind.category.value


class IEvents(Interface):
    async def latest(ldn: str, limit: int = 100) -> list[Event]:
        """A meter's latest events, newest first."""

    async def open_alarms(
        ldn: str | None = None,
        category: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AlarmPage:
        """The open alarms, newest first, of one meter or all, of one category or all, a
        page after ``cursor``; UnknownMeter, InvalidRequest (a category, a page size),
        BadCursor."""

    async def alarm_counts() -> list[AlarmCount]:
        """The open alarms by category (how many, on how many meters), most first."""

    async def open_counts(ldns: Sequence[str]) -> dict[str, int]:
        """{LDN: open alarms} of those of ``ldns`` (at most 1000) that have any."""

    async def acknowledge(alarm_id: int, by: Actor, note: str | None = None) -> Event:
        """Acknowledge one open alarm (audited); the alarm as it is now.  UnknownAlarm,
        AlreadyAcknowledged (a Conflict), InvalidRequest for a note too long."""

    async def acknowledge_meter(ldn: str, by: Actor, note: str | None = None) -> int:
        """Acknowledge every open alarm of a meter (audited); how many.  UnknownMeter."""


@implementer(IEvents)
class EventsComponent(Component):
    async def latest(self, ldn: str, limit: int = 100) -> list[Event]:
        return await self.db.run(latest_events(ldn, limit))

    async def open_alarms(
        self,
        ldn: str | None = None,
        category: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AlarmPage:
        return await self.db.run(open_alarms(ldn, category, cursor, limit))

    async def alarm_counts(self) -> list[AlarmCount]:
        return await self.db.run(alarm_counts())

    async def open_counts(self, ldns: Sequence[str]) -> dict[str, int]:
        return await self.db.run(open_counts(ldns))

    async def acknowledge(self, alarm_id: int, by: Actor, note: str | None = None) -> Event:
        now, text = self.db.now(), _note(note)
        change = acknowledge_one(alarm_id, by.name, text, now)
        detail = f"alarm {alarm_id}" + (f": {text}" if text else "")
        return await self.db.run(_audited_alarm(change, by, detail, now))

    async def acknowledge_meter(self, ldn: str, by: Actor, note: str | None = None) -> int:
        now, text = self.db.now(), _note(note)
        change = acknowledge_meter(ldn, by.name, text, now)
        detail = "every open alarm" + (f": {text}" if text else "")
        return await self.db.run(audited(change, by, "acknowledge alarms", ldn, now, detail))


def _audited_alarm(
    change: Transaction[Event], by: Actor, detail: str, now: dt.datetime
) -> Transaction[Event]:
    """One acknowledgement and its audit line (the target: the alarm's meter)."""
    event = yield from change
    yield from audit(by, "acknowledge alarm", event.ldn, detail, now)
    return event
