"""The settings a simulated meter keeps and applies (issue 22), as the SAC writes them.

Where they live is the profile's word (``push_setup``, ``push_schedule``,
``billing_period_start``, ``valve_configuration``, ``valve_pin``, ``opening_validity``,
``no_communication_threshold``, ``tamper_threshold``: docs/uni-ts-11291.md §1.4, §1.6, §1.7).
:data:`SETTINGS` says, for each (quantity, attribute), the A-XDR shape GET returns and SET
takes, and where the value goes in :class:`Settings`:

====================================  =========================================================
push_schedule (IC 22) 4               array of 0..4 {time (4-byte octet-string), date (5)}; a
                                      date of wildcards is daily (a weekday given: that day)
push_setup (IC 40) 2                  array of one {62, compact data LN, 2, 0}
push_setup 3                          {transport enum, "host:port" octet-string, 0 (A-XDR)}
push_setup 4                          array of 0..4 {start, end} 12-byte date-times, both of
                                      wildcard dates (a daily window) or both dated (Italian
                                      local time: their deviation is not read)
push_setup 5                          long-unsigned seconds
billing_period_start 2                a 12-byte date-time (wildcards allowed)
valve_configuration 2                 long-unsigned bit map
valve_pin 2                           long-unsigned 0..9999
opening_validity 2                    long-unsigned minutes, 1..65535
no_communication_threshold (IC 21) 2  array of one long-unsigned (days)
tamper_threshold (IC 21) 2            array of one unsigned (attempts)
====================================  =========================================================

A SET is refused with **type-unmatched** when the A-XDR types or a structure's number of
elements differ from the table, and with **other-reason** when the types are right but the
content is not acceptable: a PIN over 9999, a template the meter has no layout for, more than
four entries, an octet-string of the wrong length for a time or date, a date or time that is
not one (a date is all wildcards or a calendar date: no monthly or yearly patterns; a time
has its hour and minute), a message type other than A-XDR.  Nothing changes on a refusal.
(The transport is kept and given back, but the simulator always pushes over TCP.)

Memory: a meter points to :data:`DEFAULTS` (or its fleet's defaults) until a SET, then to its
own frozen copy; a fleet of 100,000 meters nobody configures shares one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sac.dlms import Obis
from sac.dlms.axdr import Array, Enum, Integer, LongUnsigned, OctetString, Structure, Unsigned
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.errors import DecodeError
from sac.profiles import IMeterProfile, compact_data, compact_template
from sac.simulator.life import ITALY

__all__ = [
    "DEFAULTS",
    "QUANTITIES",
    "SETTINGS",
    "Refused",
    "Settings",
    "Unmatched",
    "destination_address",
    "in_window",
    "next_execution",
]

# events a SET logs (docs/uni-ts-11291.md §1.9)
EV_PARAMETER_CONFIGURED = 15
EV_PIN_CHANGED = 108
MAX_ENTRIES = 4  # execution times, communication windows
# the end-of-billing start: the 1st of each month at 06:00 (the gas day's start)
DEFAULT_BILLING_START = CosemDateTime(None, None, 1, None, 6, 0, 0, 0, None, None).to_bytes()


@dataclass(frozen=True, slots=True)
class Settings:
    """What a meter was told; raw times as they came (GET gives them back as sent)."""

    push_times: tuple[tuple[bytes, bytes], ...] = ()  # (time, date): empty = the interval
    destination: tuple[int, bytes, int] = (0, b"", 0)  # b"": where its fleet pushes
    windows: tuple[tuple[bytes, bytes], ...] = ()
    randomisation: int = 0  # seconds
    template: int | None = None  # None: the profile's usual templates
    billing_start: bytes = DEFAULT_BILLING_START
    valve_configuration: int = 0
    valve_pin: int = 0
    opening_validity: int = 1440  # minutes
    no_communication_days: int = 30
    tamper_attempts: int = 5


DEFAULTS = Settings()


class Unmatched(Exception):
    """Not the A-XDR shape the setting takes: type-unmatched."""


class Refused(Exception):
    """The right shape, a value the meter does not take: other-reason."""


# --- shapes ------------------------------------------------------------------------------


def _typed(value: Any, kind: type, size: int | None = None) -> Any:
    """``value`` if it is of the A-XDR type ``kind`` (and a structure of ``size`` elements)."""
    sized: Any = value
    if type(value) is not kind or (size is not None and len(sized) != size):
        raise Unmatched(f"expected {kind.__name__}")
    return value


def _pairs(value: Any) -> tuple[tuple[bytes, bytes], ...]:
    """An array of {octet-string, octet-string}: at most four."""
    pairs = tuple(
        (bytes(_typed(e[0], OctetString)), bytes(_typed(e[1], OctetString)))
        for e in (_typed(entry, Structure, 2) for entry in _typed(value, Array))
    )
    if len(pairs) > MAX_ENTRIES:
        raise Refused(f"more than {MAX_ENTRIES} entries")
    return pairs


def _one(value: Any, kind: type) -> int:
    items = _typed(value, Array)
    if len(items) != 1:
        raise Refused("one threshold")
    return int(_typed(items[0], kind))


def _bounded(value: Any, low: int, high: int) -> int:
    number = int(_typed(value, LongUnsigned))
    if not low <= number <= high:
        raise Refused(f"not in {low}..{high}")
    return number


# --- dates and times ---------------------------------------------------------------------


def _time(raw: bytes) -> dt.time:
    try:
        return CosemTime.from_bytes(raw).to_time()
    except DecodeError as exc:
        raise Refused(str(exc)) from None


def _date(raw: bytes) -> tuple[dt.date | None, int | None]:
    """A calendar date, or None for a date of wildcards; and the weekday it names."""
    try:
        d = CosemDate.from_bytes(raw)
        if d.weekday is not None and not 1 <= d.weekday <= 7:
            raise DecodeError(f"weekday {d.weekday}")
        if d.year is None and d.month is None and d.day is None:
            return None, d.weekday
        return d.to_date(), d.weekday
    except DecodeError as exc:
        raise Refused(str(exc)) from None


def _date_time(raw: bytes) -> tuple[dt.date | None, dt.time]:
    if len(raw) != 12:
        raise Refused("a date-time has 12 bytes")
    return _date(raw[:5])[0], _time(raw[5:9])


def _times(value: Any, profile: IMeterProfile) -> tuple[tuple[bytes, bytes], ...]:
    pairs = _pairs(value)
    for time_raw, date_raw in pairs:
        _time(time_raw)
        _date(date_raw)
    return pairs


def _windows(value: Any, profile: IMeterProfile) -> tuple[tuple[bytes, bytes], ...]:
    pairs = _pairs(value)
    for start, end in pairs:
        (first, _), (last, _) = _date_time(start), _date_time(end)
        if (first is None) != (last is None):
            raise Refused("a window is daily or dated at both ends")
    return pairs


def _billing_start(value: Any, profile: IMeterProfile) -> bytes:
    raw = bytes(_typed(value, OctetString))
    try:
        t = CosemDateTime.from_bytes(raw)
    except DecodeError as exc:
        raise Refused(str(exc)) from None
    ranges = ((t.month, 1, 12), (t.day, 1, 31), (t.hour, 0, 23), (t.minute, 0, 59))
    if any(v is not None and not low <= v <= high for v, low, high in ranges):
        raise Refused("not a date-time")
    return raw


def _local(day: dt.date, time: dt.time) -> float:
    return dt.datetime.combine(day, time, ITALY).timestamp()


def next_execution(times: tuple[tuple[bytes, bytes], ...], t: float) -> float | None:
    """The first execution time after ``t`` (UNIX seconds, Italian local time); None when
    every one is past."""
    today = dt.datetime.fromtimestamp(t, ITALY).date()
    found: list[float] = []
    for time_raw, date_raw in times:
        time, (day, weekday) = _time(time_raw), _date(date_raw)
        days = (day,) if day is not None else (today + dt.timedelta(n) for n in range(9))
        at = next(
            (
                at
                for d in days
                if (weekday is None or d.isoweekday() == weekday) and (at := _local(d, time)) > t
            ),
            None,
        )
        if at is not None:
            found.append(at)
    return min(found, default=None)


def _window_spans(start: bytes, end: bytes, t: float) -> list[tuple[float, float]]:
    (first, opens), (last, closes) = _date_time(start), _date_time(end)
    if first is not None and last is not None:
        return [(_local(first, opens), _local(last, closes))]
    today = dt.datetime.fromtimestamp(t, ITALY).date()
    overnight = dt.timedelta(1 if closes <= opens else 0)
    days = (today + dt.timedelta(n) for n in (-1, 0, 1))
    return [(_local(d, opens), _local(d + overnight, closes)) for d in days]


def in_window(windows: tuple[tuple[bytes, bytes], ...], t: float) -> float:
    """``t`` if it is inside a window (or none is set), else the next window's start; ``t``
    too when every window is past."""
    if not windows:
        return t
    starts = []
    for start, end in windows:
        for opens, closes in _window_spans(start, end, t):
            if opens <= t < closes:
                return t
            if opens > t:
                starts.append(opens)
    return min(starts, default=t)


def destination_address(raw: bytes) -> tuple[str, int] | None:
    """``host:port`` as a (host, port), None when it is not one."""
    host, _, port = raw.decode("ascii", "replace").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


# --- the push setup's object list and destination ----------------------------------------


def _object_list(s: Settings, profile: IMeterProfile) -> Array:
    template = s.template if s.template is not None else next(iter(profile.push_templates), None)
    if template is None:
        return Array()
    ln = compact_data(template).obis
    return Array(
        (Structure((LongUnsigned(62), OctetString(bytes(ln)), Integer(2), LongUnsigned(0))),)
    )


def _template(value: Any, profile: IMeterProfile) -> int:
    entries = _typed(value, Array)
    if len(entries) != 1:
        raise Refused("a push carries one compact frame")
    class_id, ln, attribute, index = _typed(entries[0], Structure, 4)
    for part, kind in ((class_id, LongUnsigned), (attribute, Integer), (index, LongUnsigned)):
        _typed(part, kind)
    raw = bytes(_typed(ln, OctetString))
    template = compact_template(Obis(raw)) if len(raw) == 6 else None
    if (class_id, attribute, index) != (62, 2, 0) or template not in profile.layouts:
        raise Refused("not a compact frame of this meter")
    assert template is not None
    return template


def _destination(value: Any, profile: IMeterProfile) -> tuple[int, bytes, int]:
    transport, address, message = _typed(value, Structure, 3)
    for part, kind in ((transport, Enum), (address, OctetString), (message, Enum)):
        _typed(part, kind)
    if message != 0:
        raise Refused("A-XDR messages only")
    return int(transport), bytes(address), 0


class Setting(NamedTuple):
    field: str  # of Settings
    get: Callable[[Settings, IMeterProfile], Any]
    parse: Callable[[Any, IMeterProfile], Any]  # raises Unmatched or Refused
    event: int = EV_PARAMETER_CONFIGURED
    push: bool = False  # it moves the next push


def _pairs_value(pairs: tuple[tuple[bytes, bytes], ...]) -> Array:
    return Array(Structure((OctetString(a), OctetString(b))) for a, b in pairs)


SETTINGS: dict[tuple[str, int], Setting] = {
    ("push_schedule", 4): Setting(
        "push_times", lambda s, p: _pairs_value(s.push_times), _times, push=True
    ),
    ("push_setup", 2): Setting("template", _object_list, _template),
    ("push_setup", 3): Setting(
        "destination",
        lambda s, p: Structure(
            (Enum(s.destination[0]), OctetString(s.destination[1]), Enum(s.destination[2]))
        ),
        _destination,
    ),
    ("push_setup", 4): Setting(
        "windows", lambda s, p: _pairs_value(s.windows), _windows, push=True
    ),
    ("push_setup", 5): Setting(
        "randomisation",
        lambda s, p: LongUnsigned(s.randomisation),
        lambda v, p: _bounded(v, 0, 0xFFFF),
        push=True,
    ),
    ("billing_period_start", 2): Setting(
        "billing_start", lambda s, p: OctetString(s.billing_start), _billing_start
    ),
    ("valve_configuration", 2): Setting(
        "valve_configuration",
        lambda s, p: LongUnsigned(s.valve_configuration),
        lambda v, p: _bounded(v, 0, 0xFFFF),
    ),
    ("valve_pin", 2): Setting(
        "valve_pin",
        lambda s, p: LongUnsigned(s.valve_pin),
        lambda v, p: _bounded(v, 0, 9999),
        EV_PIN_CHANGED,
    ),
    ("opening_validity", 2): Setting(
        "opening_validity",
        lambda s, p: LongUnsigned(s.opening_validity),
        lambda v, p: _bounded(v, 1, 0xFFFF),
    ),
    ("no_communication_threshold", 2): Setting(
        "no_communication_days",
        lambda s, p: Array((LongUnsigned(s.no_communication_days),)),
        lambda v, p: _one(v, LongUnsigned),
    ),
    ("tamper_threshold", 2): Setting(
        "tamper_attempts",
        lambda s, p: Array((Unsigned(s.tamper_attempts),)),
        lambda v, p: _one(v, Unsigned),
    ),
}
# the quantities that are settings (their other attributes: object-unavailable)
QUANTITIES = frozenset(q for q, _ in SETTINGS)
