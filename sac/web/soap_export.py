"""The answers of the SOAP exports (``GetReadings``, ``ExportIndexReadings``,
``ExportMonthStartIndexes``: up to 10,000 readings a page), written here rather than by
spyne, a slice at a time, so that a big page neither costs seconds nor holds the reactor.

Why: spyne builds a model object per reading and walks its class attributes for every
field; a page of 10,000 readings took 1 to 5 s on the reactor thread, during which no push
was stored and ``/health`` did not answer (issue 23).  Here each reading is one formatted
string; what repeats on a page (a meter's LDN and PDR, the object, the unit, the source) is
escaped once, by lxml (so a character XML cannot hold is refused as spyne refuses it), and
the page is written under :func:`sac.web.history.converted`, which hands the reactor
back every 10 ms.

The bytes are spyne's for the same page (``tests/web/test_soap_export.py`` compares their
canonical XML): the same envelope and prefixes, elements in the WSDL's order, an absent
optional field left out, a Decimal as ``str`` gives it, a time as ``isoformat``.  The WSDL,
the requests and the faults stay spyne's: only these answers are written here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable, Callable
from typing import Any

from lxml import etree

from sac import gasday
from sac.store import MonthStartIndex, MonthStartPage, Reading, ReadingPage
from sac.web import display
from sac.web.history import converted
from sac.web.soap_types import NS
from sac.web.spyne_compat import SOAP11_ENV, Serialised

__all__ = ["month_start_answer", "readings_answer"]

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


class _Page:
    """What repeats on a page of an answer (a meter's LDN and PDR, the object, the unit, the
    source), formatted and escaped once."""

    def __init__(self) -> None:
        self._texts: dict[Any, str] = {}

    def _once(self, key: Any, make: Callable[[], str]) -> str:
        found = self._texts.get(key)
        if found is None:
            found = self._texts[key] = make()
        return found

    def field(self, name: str, text: str | None) -> str:
        """``<tns:name>text</tns:name>``, nothing for None."""
        if text is None:
            return ""
        return self._once((name, text), lambda: f"<tns:{name}>{_escaped(text)}</tns:{name}>")

    def reading(self, r: Reading, pdr: str | None) -> str:
        """A ReadingInfo's fields, in the WSDL's order (the element around is the caller's)."""
        head = self._once(
            (r.ldn, pdr, r.obis, r.attribute),
            lambda: (
                self.field("ldn", r.ldn)
                + self.field("pdr", pdr)
                + f"<tns:obis>{r.obis}</tns:obis><tns:attribute>{r.attribute}</tns:attribute>"
            ),
        )
        value = r.scaled
        if value is not None:
            unit = self._once(("unit", r.unit), lambda: _unit(r.unit))
            number = f"<tns:value><tns:value>{value}</tns:value>{unit}</tns:value>"
        elif r.raw is not None:
            number = f"<tns:raw>{r.raw.hex().upper()}</tns:raw>"
        else:
            number = ""
        received = r.received.isoformat()
        if r.captured is None:
            captured = ""
        elif r.captured.tzinfo is r.received.tzinfo and r.captured == r.received:
            # often the same time (a poll's), in the same zone: the same text, written once
            captured = f"<tns:captured>{received}</tns:captured>"
        else:
            captured = _time("captured", r.captured)
        source = self.field("source", r.source)
        return f"{head}{number}{captured}<tns:received>{received}</tns:received>{source}"


def _time(name: str, at: dt.datetime) -> str:
    return f"<tns:{name}>{at.isoformat()}</tns:{name}>"


def _unit(code: int | None) -> str:
    unit = "" if code is None else f"<tns:unit>{code}</tns:unit>"
    name = display.unit_name(code)
    return unit + (f"<tns:unitName>{_escaped(name)}</tns:unitName>" if name else "")


def _envelope(operation: str, opening: str, rows: list[str], closing: str) -> Serialised:
    parts = [_HEAD, f"<tns:{operation}Response><tns:{operation}Result>", opening, *rows]
    parts += [closing, f"</tns:{operation}Result></tns:{operation}Response>", _TAIL]
    return Serialised("".join(parts).encode())


async def readings_answer(operation: str, slices: AsyncIterable[ReadingPage]) -> Serialised:
    """The answer of ``operation`` (its result a ReadingPage) for a page of the store, in
    the slices :func:`sac.web.history.reading_slices` gives (the last one's cursor is the
    page's); each slice is written a part at a time, the reactor free between."""
    writer, pdrs, rows, cursor = _Page(), dict[str, str | None](), list[str](), None

    def row(r: Reading) -> str:
        return f"<tns:ReadingInfo>{writer.reading(r, pdrs.get(r.ldn))}</tns:ReadingInfo>"

    async for page in slices:
        pdrs.update(page.pdrs)
        rows += await converted(page.readings, row)
        cursor = page.cursor
    closing = "</tns:readings>" + writer.field("cursor", cursor)
    return _envelope(operation, "<tns:readings>", rows, closing)


async def month_start_answer(
    operation: str, year: int, month: int, page: MonthStartPage
) -> Serialised:
    """The answer of ``operation`` (its result a MonthStartPage) for a page of the store."""
    writer = _Page()

    def row(info: MonthStartIndex) -> str:
        fields = writer.field("ldn", info.ldn) + writer.field("pdr", info.pdr)
        if info.reading is not None:
            fields += f"<tns:index>{writer.reading(info.reading, info.pdr)}</tns:index>"
        return f"<tns:MonthStartInfo>{fields}</tns:MonthStartInfo>"

    opening = _time("monthStart", gasday.month_start(year, month)) + "<tns:rows>"
    closing = "</tns:rows>" + writer.field("cursor", page.cursor)
    return _envelope(operation, opening, await converted(page.rows, row), closing)
