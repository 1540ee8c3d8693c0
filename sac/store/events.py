"""Events: what meters' logbooks recorded (the ingest path writes them with the readings)."""

from __future__ import annotations

from zope.interface import Interface, implementer

from sac.dlms import Obis
from sac.store.model import Event
from sac.store.sql import Component, Query, Transaction, stamp

__all__ = ["EventsComponent", "IEvents"]


def events(ldn: str, limit: int) -> Transaction[list[Event]]:
    """A meter's latest events, newest first."""
    rows = yield Query(
        "SELECT e.logbook, e.code, e.occurred, e.received, e.source, e.counter"
        " FROM events e JOIN meters m ON m.id = e.meter_id WHERE m.ldn = ?"
        " ORDER BY e.occurred DESC, e.id DESC LIMIT ?",
        (ldn, limit),
    )
    return [
        Event(ldn, Obis(logbook), code, stamp(occurred), stamp(received), source, counter)
        for logbook, code, occurred, received, source, counter in rows
    ]


class IEvents(Interface):
    async def latest(ldn: str, limit: int = 100) -> list[Event]:
        """A meter's latest events, newest first."""


@implementer(IEvents)
class EventsComponent(Component):
    async def latest(self, ldn: str, limit: int = 100) -> list[Event]:
        return await self.db.run(events(ldn, limit))
