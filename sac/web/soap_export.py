"""The answers of the SOAP exports (``GetReadings``, ``ExportIndexReadings``,
``ExportMonthStartIndexes``: up to 10,000 readings a page), written here rather than by
spyne, a slice at a time, so that a big page neither costs seconds nor holds the reactor.

Why: spyne builds a model object per reading and walks its class attributes for every
field; a page of 10,000 readings took 1 to 5 s on the reactor thread, during which no push
was stored and ``/health`` did not answer (issue 23).  Here each reading is one formatted
string, made from the store's :class:`~sac.store.ExportedReading` tuples (no Reading made:
that cost as much as the writing); what repeats on a page (a meter's LDN and PDR, the
object, the unit, the source) is escaped once, by lxml (so a character XML cannot hold is
refused as spyne refuses it), and the page is written under
:func:`sac.web.history.converted`, with a turn of the reactor every
:data:`~sac.web.history.STEP` readings.  About 6 us of CPU a reading from the database's
rows to the answer's text (13 us with the HTTP and the database's side, in
``benchmarks/bench_soap.py``), against 13 us for Readings written the same way.

The bytes are spyne's for the same page (``tests/web/test_soap_export.py`` compares their
canonical XML): the same envelope and prefixes, elements in the WSDL's order, an absent
optional field left out, a Decimal as ``str`` gives it, a time as ``isoformat``.  The WSDL,
the requests and the faults stay spyne's: only these answers are written here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable
from decimal import Decimal
from typing import Any

from lxml import etree

from sac import gasday
from sac.store import ExportedReading, ExportPage, MonthStartIndex, MonthStartPage, Reading
from sac.web import display
from sac.web.history import converted
from sac.web.soap_types import NS
from sac.web.spyne_compat import SOAP11_ENV, Serialised

__all__ = [
    "PageText",
    "envelope",
    "exported",
    "month_start_answer",
    "readings_answer",
    "time_field",
]

_HEAD = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    f'<soap11env:Envelope xmlns:soap11env="{SOAP11_ENV}" xmlns:tns="{NS}">'
    "<soap11env:Body>"
)
_TAIL = "</soap11env:Body></soap11env:Envelope>"


def _escaped(text: str) -> str:
    """``text`` as lxml writes it in an element: ``&``, ``<``, ``>`` and CR escaped;
    ValueError for a character XML cannot hold, as lxml (so spyne) raises."""
    element = etree.Element("t")
    element.text = text
    written = etree.tostring(element, encoding="unicode")
    return written[3:-4] if written.endswith("</t>") else ""


class PageText:
    """What repeats on a page of an answer (a meter's LDN and PDR, the object, the unit, the
    source), formatted and escaped once."""

    def __init__(self) -> None:
        self._fields: dict[tuple[str, str], str] = {}
        self._templates: dict[tuple[Any, ...], tuple[str, str, str]] = {}

    def field(self, name: str, text: str | None) -> str:
        """``<tns:name>text</tns:name>``, nothing for None."""
        if text is None:
            return ""
        found = self._fields.get((name, text))
        if found is None:
            found = self._fields[name, text] = f"<tns:{name}>{_escaped(text)}</tns:{name}>"
        return found

    def _template(self, key: tuple[Any, ...]) -> tuple[str, str, str]:
        ldn, pdr, obis, attribute, unit, source = key
        head = self.field("ldn", ldn) + self.field("pdr", pdr)
        head += f"<tns:obis>{obis}</tns:obis><tns:attribute>{attribute}</tns:attribute>"
        found = self._templates[key] = (head, _unit(unit), self.field("source", source))
        return found

    def reading(self, r: ExportedReading, opening: str = "", closing: str = "") -> str:
        """A ReadingInfo's fields, in the WSDL's order, between ``opening`` and ``closing``
        (the element around, the caller's)."""
        ldn, obis, attribute, value, raw, scaler, unit, captured, received, source, pdr = r
        key = (ldn, pdr, obis, attribute, unit, source)
        head, units, origin = self._templates.get(key) or self._template(key)
        if value is None:
            number = "" if raw is None else f"<tns:raw>{raw.hex().upper()}</tns:raw>"
        else:  # a Reading's ``scaled``; an int made a Decimal directly (exact either way)
            exact = Decimal(value) if type(value) is int else Decimal(str(value))
            number = f"<tns:value><tns:value>{exact.scaleb(scaler or 0)}</tns:value>{units}"
            number += "</tns:value>"
        at = received.isoformat()
        if captured is None:
            when = ""
        elif captured.tzinfo is received.tzinfo and captured == received:
            when = f"<tns:captured>{at}</tns:captured>"  # a poll's: the same text, made once
        else:
            when = f"<tns:captured>{captured.isoformat()}</tns:captured>"
        return f"{opening}{head}{number}{when}<tns:received>{at}</tns:received>{origin}{closing}"


def exported(reading: Reading, pdr: str | None) -> ExportedReading:
    """A Reading as the tuple an answer writes."""
    r = reading
    return ExportedReading(
        r.ldn,
        str(r.obis),
        r.attribute,
        r.value,
        r.raw,
        r.scaler,
        r.unit,
        r.captured,
        r.received,
        r.source,
        pdr,
    )


def time_field(name: str, at: dt.datetime) -> str:
    return f"<tns:{name}>{at.isoformat()}</tns:{name}>"


def _unit(code: int | None) -> str:
    unit = "" if code is None else f"<tns:unit>{code}</tns:unit>"
    name = display.unit_name(code)
    return unit + (f"<tns:unitName>{_escaped(name)}</tns:unitName>" if name else "")


def envelope(operation: str, opening: str, rows: list[str], closing: str) -> Serialised:
    parts = [_HEAD, f"<tns:{operation}Response><tns:{operation}Result>", opening, *rows]
    parts += [closing, f"</tns:{operation}Result></tns:{operation}Response>", _TAIL]
    return Serialised("".join(parts).encode())


async def readings_answer(operation: str, slices: AsyncIterable[ExportPage]) -> Serialised:
    """The answer of ``operation`` (its result a ReadingPage) for a page of the store, in
    the slices :func:`sac.web.history.reading_slices` gives with ``exported=True`` (the
    last one's cursor is the page's); each slice is written a part at a time, the reactor
    free between."""
    writer, rows, cursor = PageText(), list[str](), None

    def row(r: ExportedReading) -> str:
        return writer.reading(r, "<tns:ReadingInfo>", "</tns:ReadingInfo>")

    async for page in slices:
        rows += await converted(page.readings, row)
        cursor = page.cursor
    closing = "</tns:readings>" + writer.field("cursor", cursor)
    return envelope(operation, "<tns:readings>", rows, closing)


async def month_start_answer(
    operation: str, year: int, month: int, page: MonthStartPage
) -> Serialised:
    """The answer of ``operation`` (its result a MonthStartPage) for a page of the store."""
    writer = PageText()

    def row(info: MonthStartIndex) -> str:
        fields = writer.field("ldn", info.ldn) + writer.field("pdr", info.pdr)
        if info.reading is not None:
            fields += f"<tns:index>{writer.reading(exported(info.reading, info.pdr))}</tns:index>"
        return f"<tns:MonthStartInfo>{fields}</tns:MonthStartInfo>"

    opening = time_field("monthStart", gasday.month_start(year, month)) + "<tns:rows>"
    closing = "</tns:rows>" + writer.field("cursor", page.cursor)
    return envelope(operation, opening, await converted(page.rows, row), closing)
