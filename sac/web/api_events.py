"""The JSON API's events and alarms (:mod:`sac.web.api` routes them): a meter's events over
a time range, the open alarms, an alarm acknowledged; each event in words (its Italian and
English names, the meter's profile's own codes first), as :mod:`sac.web.schema` declares.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from sac.eventcodes import Category, describe
from sac.store import Event
from sac.web import display
from sac.web.api_input import query_limit, query_time, read_body
from sac.web.errors import ApiError
from sac.web.history import converted
from sac.web.schema import AcknowledgeIn, AcknowledgementOut, EventOut, EventsOut

__all__ = [
    "EVENTS_END",
    "EVENTS_START",
    "acknowledgement",
    "alarm_query",
    "event_out",
    "events_answer",
    "events_query",
]

# a range's bounds when a client gives none: fixed, so a page's cursor stays its query's
EVENTS_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EVENTS_END = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
CATEGORIES = tuple(c.value for c in Category)


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def event_out(event: Event, profile: Any) -> EventOut:
    kind = describe(event.code, getattr(profile, "events", None))
    ack = event.acknowledgement
    assert event.id is not None  # (stored)
    return EventOut(
        id=event.id,
        ldn=event.ldn,
        logbook=str(event.logbook),
        code=event.code,
        name_it=kind.italian,
        name_en=kind.english,
        category=event.category or kind.category.value,
        severity=event.severity or kind.severity.value,
        occurred=_time(event.occurred),
        received=_time(event.received),
        source=event.source,
        counter=event.counter,
        open=event.open_alarm,
        acknowledged=AcknowledgementOut(ack.by, _time(ack.at), ack.note) if ack else None,
    )


async def events_answer(
    events: tuple[Event, ...], cursor: str | None, store: Any, registry: Any
) -> dict[str, Any]:
    """A page of events as JSON, each named by its meter's profile (one query a page)."""
    profiles = await display.profiles_by_ldn(store, registry, [e.ldn for e in events])
    out = await converted(events, lambda event: event_out(event, profiles[event.ldn]))
    answer: dict[str, Any] = msgspec.to_builtins(EventsOut(out, cursor))
    return answer


def events_query(query: dict[str, str]) -> tuple[dt.datetime, dt.datetime, str | None, int]:
    """(start, end, cursor, limit) of a meter's events; 400 for a bad one."""
    start = query_time(query, "start") or EVENTS_START
    end = query_time(query, "end") or EVENTS_END
    if end <= start:
        raise ApiError(400, "bad_parameter", "the range ends before it starts")
    return start, end, query.get("cursor") or None, query_limit(query)


def alarm_query(query: dict[str, str]) -> tuple[str | None, str | None, str | None, int]:
    """(category, ldn, cursor, limit) of the open alarms; 400 for a bad one."""
    category = query.get("category") or None
    if category is not None and category not in CATEGORIES:
        raise ApiError(400, "bad_parameter", f"category is one of {', '.join(CATEGORIES)}")
    return category, query.get("ldn") or None, query.get("cursor") or None, query_limit(query)


def acknowledgement(request: Any) -> str | None:
    """The note of an acknowledgement's body ``{"note": ...}`` (an empty body: none); 422
    when it is not a string of at most 1000 characters."""
    request.content.seek(0)
    if not request.content.read(1):
        return None
    body = read_body(request)
    try:
        return msgspec.convert(body, AcknowledgeIn).note
    except msgspec.ValidationError as exc:
        field = "note" if "`$.note`" in str(exc) else None
        problem = {"index": None, "field": field, "message": str(exc)}
        raise ApiError(
            422, "invalid", "the request is refused: nothing is changed", items=[problem]
        ) from None
