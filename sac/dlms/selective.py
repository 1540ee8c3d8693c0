"""Selective access to a profile's buffer (IC 7 attribute 2): the range and entry
descriptors, as a client asks for them and as a server applies them to its rows.

The SAC builds its range requests with :func:`by_range` (on
:func:`sac.dlms.xdlms.range_descriptor`; :func:`~sac.dlms.xdlms.entry_descriptor` asks by
entry); the simulated meter answers them with :func:`select`, so both sides read the
descriptors the same way
(IEC 62056-6-2 §4.3.6; docs/uni-ts-11291.md §1.5).  Which objects are times is the caller's
knowledge (its profile's UNIX time and clock), passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sac.dlms.axdr import DoubleLongUnsigned, OctetString, Structure
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.obis import Obis
from sac.dlms.xdlms import SelectiveAccess, range_descriptor

__all__ = ["BY_ENTRY", "BY_RANGE", "by_range", "select"]

BY_RANGE, BY_ENTRY = 1, 2


def by_range(
    restricting: tuple[int, Obis, int],
    start: dt.datetime,
    end: dt.datetime,
    *,
    date_time: bool,
    zone: dt.tzinfo,
    inverted_deviation: bool,
) -> SelectiveAccess:
    """The rows whose ``restricting`` object (class id, logical name, attribute) is between
    ``start`` and ``end``: as 12-byte date-times in ``zone`` (``date_time``), else as UNIX
    seconds; all columns."""
    class_id, obis, attribute = restricting
    low: Any
    high: Any
    if date_time:
        low, high = (
            OctetString(
                CosemDateTime.from_datetime(
                    t.astimezone(zone), inverted_deviation=inverted_deviation
                ).to_bytes()
            )
            for t in (start, end)
        )
    else:
        low, high = (DoubleLongUnsigned(int(t.timestamp())) for t in (start, end))
    return range_descriptor((class_id, obis, attribute, 0), low, high)


def _instant(value: Any, inverted_deviation: bool) -> float:
    """A time value as UNIX seconds: UNIX seconds themselves, or a 12-byte date-time."""
    if isinstance(value, bytes) and len(value) == 12:
        t = CosemDateTime.from_bytes(value).to_datetime(inverted_deviation=inverted_deviation)
        return t.timestamp()
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{value!r} is not a time")


def select(
    rows: list[Structure],
    access: SelectiveAccess | None,
    *,
    columns: Sequence[Obis],
    times: Collection[Obis],
    inverted_deviation: bool,
) -> list[Structure]:
    """The rows (and columns) of a buffer that ``access`` selects.  ``columns``: the logical
    names the rows capture; ``times``: the objects that are times.  A range is applied to
    the buffer's time column; ValueError for a descriptor that cannot be applied."""
    if access is None:
        return rows
    p = access.parameters
    if access.selector == BY_RANGE:
        restricting, start, end = p[0], p[1], p[2]
        if Obis(bytes(restricting[1])) not in times:
            raise ValueError("range restricted on an object that is not a time")
        t = next((i for i, c in enumerate(columns) if c in times), None)
        if t is None:
            raise ValueError("the buffer has no time column")
        low, high = (_instant(v, inverted_deviation) for v in (start, end))
        return [r for r in rows if low <= _instant(r[t], inverted_deviation) <= high]
    if access.selector == BY_ENTRY:
        first, last = int(p[0]), int(p[1]) or len(rows)
        col_first, col_last = int(p[2]), int(p[3])
        chosen = rows[first - 1 : last]
        if col_first > 1 or col_last:
            chosen = [Structure(r[col_first - 1 : col_last or None]) for r in chosen]
        return chosen
    raise ValueError(f"access selector {access.selector}")
