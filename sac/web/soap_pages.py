"""The answers of ``GetEvents`` and ``GetConnections`` (up to 10,000 rows a page), written
here rather than by spyne, as :mod:`sac.web.soap_export` writes the readings' (issue 23):
each row one formatted string, what repeats (a meter's LDN, the logbook, an event code's
names and classes, the source, the peer) escaped once by lxml, the page written under
:func:`sac.web.history.converted` (the reactor's turn between two parts).

The bytes are spyne's for the same page (``tests/web/test_soap_pages.py`` compares their
canonical XML): the elements in the WSDL's order (:mod:`sac.web.soap_types`), an absent
optional field left out, a boolean ``true``/``false``, a list of texts as ``tns:string``
elements (an empty one still written, as spyne writes it).
"""

from __future__ import annotations

from sac.eventcodes import describe
from sac.store import Connection, ConnectionPage, Event, EventPage
from sac.web.history import converted
from sac.web.soap_export import PageText, envelope, time_field
from sac.web.spyne_compat import Serialised

__all__ = ["connections_answer", "events_answer"]


class _Events(PageText):
    """An EventInfo's fields, what repeats made once."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds: dict[tuple[int, str | None, str | None], str] = {}

    def _kind(self, key: tuple[int, str | None, str | None]) -> str:
        code, category, severity = key
        kind = describe(code)
        text = (
            f"<tns:code>{code}</tns:code>"
            + self.field("name_it", kind.italian)
            + self.field("name_en", kind.english)
            + self.field("category", category or kind.category.value)
            + self.field("severity", severity or kind.severity.value)
        )
        self._kinds[key] = text
        return text

    def event(self, e: Event) -> str:
        kind_key = (e.code, e.category, e.severity)
        kind = self._kinds.get(kind_key) or self._kind(kind_key)
        parts = [
            "<tns:EventInfo>",
            self.field("ldn", e.ldn),
            self.field("logbook", str(e.logbook)),
            kind,
            time_field("occurred", e.occurred),
            time_field("received", e.received),
            self.field("source", e.source),
        ]
        if e.counter is not None:
            parts.append(f"<tns:counter>{e.counter}</tns:counter>")
        if e.id is not None:
            parts.append(f"<tns:id>{e.id}</tns:id>")
        parts.append("<tns:open>true</tns:open>" if e.open_alarm else "<tns:open>false</tns:open>")
        ack = e.acknowledgement
        if ack is not None:
            parts.append(time_field("acknowledged", ack.at))
            parts.append(self.field("acknowledgedBy", ack.by))
            parts.append(self.field("note", ack.note))
        parts.append("</tns:EventInfo>")
        return "".join(parts)


class _Connections(PageText):
    """A ConnectionInfo's fields, what repeats made once."""

    def _texts(self, name: str, texts: tuple[str, ...]) -> str:
        if not texts:
            return f"<tns:{name}/>"
        return f"<tns:{name}>{''.join(self.field('string', t) for t in texts)}</tns:{name}>"

    def connection(self, c: Connection) -> str:
        return "".join(
            (
                "<tns:ConnectionInfo>",
                time_field("started", c.started),
                self.field("peer", c.peer),
                self.field("kind", c.kind),
                self.field("outcome", c.outcome),
                f"<tns:durationMs>{c.duration_ms}</tns:durationMs>",
                self._texts("read", c.read),
                self._texts("skipped", c.skipped),
                self.field("detail", c.detail),
                "</tns:ConnectionInfo>",
            )
        )


async def events_answer(page: EventPage) -> Serialised:
    """The answer of ``GetEvents`` for a page of the store's events."""
    writer = _Events()
    rows = await converted(page.events, writer.event)
    closing = "</tns:events>" + writer.field("cursor", page.cursor)
    return envelope("GetEvents", "<tns:events>", rows, closing)


async def connections_answer(page: ConnectionPage) -> Serialised:
    """The answer of ``GetConnections`` for a page of a meter's connections."""
    writer = _Connections()
    rows = await converted(page.connections, writer.connection)
    closing = "</tns:connections>" + writer.field("cursor", page.cursor)
    return envelope("GetConnections", "<tns:connections>", rows, closing)
