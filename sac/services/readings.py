"""From what a meter says to what the store keeps: compact frames, attribute values, profile
rows and logbook entries as Readings, Events and the meter's list values.

Pure functions, no I/O.  The push path and the poll path both end here, so a value means
the same wherever it came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sac.dlms import Obis
from sac.dlms.axdr import OctetString, Structure, encode_data
from sac.dlms.compact import CompactFrame
from sac.dlms.cosemtime import CosemDateTime
from sac.errors import CodecError, DecodeError, EncodeError
from sac.eventcodes import EventKind, describe
from sac.profiles import STANDARD_OBJECTS, CosemRef, IMeterProfile
from sac.store.model import Event, MeterStatus, Reading

__all__ = [
    "Capture",
    "frame_readings",
    "meter_time",
    "number_of",
    "reading_of",
    "rows_to_events",
    "rows_to_readings",
    "status_of",
]

ROME = ZoneInfo("Europe/Rome")  # the meters' local time
# where no profile is at hand (a profile's columns, a query over every meter): the generic
# profile's objects, from the one catalogue (sac.profiles)
UNIX_TIME = STANDARD_OBJECTS["unix_time"].obis
CLOCK = STANDARD_OBJECTS["clock"].obis
INDEX = STANDARD_OBJECTS["converted_volume_index"].obis
# codes and counters of logbook entries (docs/uni-ts-11291.md §1.5, §1.9)
EVENT_CODE_C, EVENT_CODE_D = 96, 11
EVENT_COUNTER_C, EVENT_COUNTER_D = 96, 15


def number_of(value: Any) -> int | float | None:
    """A stored number for a DLMS value: integers, booleans, enums and floats; else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def meter_time(value: Any, *, inverted_deviation: bool) -> dt.datetime | None:
    """A meter's time value -- UNIX seconds or a 12-byte COSEM date-time -- in UTC; None when
    it is not a point in time (a date-time without deviation is taken as Italian time)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if 0 < value < 1 << 32:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        return None
    if isinstance(value, bytes) and len(value) == 12:
        try:
            t = CosemDateTime.from_bytes(value).to_datetime(inverted_deviation=inverted_deviation)
        except DecodeError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=ROME)
        return t.astimezone(dt.UTC)
    return None


def reading_of(
    ldn: str,
    ref: CosemRef,
    value: Any,
    *,
    received: dt.datetime,
    source: str,
    captured: dt.datetime | None,
    scaler_unit: tuple[int, int] | None = None,
) -> Reading:
    """One attribute's value as a Reading: a number, else its A-XDR bytes."""
    number = number_of(value)
    raw = None
    if number is None:
        try:
            raw = encode_data(value)
        except EncodeError:
            raw = repr(value).encode()
    scaler, unit = scaler_unit if scaler_unit is not None else (None, None)
    return Reading(
        ldn, ref.obis, ref.attribute, number, received, source, captured, scaler, unit, raw
    )


# --- compact frames --------------------------------------------------------------------------


def _capture_field(name: str, fields: Iterable[str]) -> str:
    """The field holding the capture time of field ``name``: ``<prefix>unix_time`` for the
    longest prefix of ``name`` (cut at an underscore) that has one, else ``unix_time``."""
    parts = name.split("_")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = "_".join(parts[:cut]) + "_unix_time"
        if candidate in fields:
            return candidate
    return "unix_time"


@dataclass(frozen=True, slots=True)
class _Step:
    """What one field of a layout gives: ``obis``/``attribute`` read from ``name``, at the
    time in field ``at`` (or, for ``entries``, each record's own ``unix_time``: ``at`` is
    empty).  ``key`` numbers the (object, attribute) in the layout: with the capture time,
    what tells two readings of a frame apart (an int hashes faster than an OBIS code)."""

    name: str
    obis: Obis
    attribute: int
    at: str
    key: int
    entries: tuple[tuple[str, Obis, int, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    steps: tuple[_Step, ...]
    keys: dict[tuple[Obis, int], int]  # each (object, attribute) of the layout: its number


_PLANS: dict[tuple[int, Obis], tuple[Any, _Plan]] = {}


def _plan(layout: Any, unix_time: Obis) -> _Plan:
    """The readings a layout's frames carry, worked out once a layout (layouts live as long
    as their profile; the layout is kept with its plan so that its id stays its own);
    ``unix_time``: the profile's UNIX time object, the capture times rather than readings."""
    known = _PLANS.get((id(layout), unix_time))
    if known is not None and known[0] is layout:
        return known[1]
    names = {f.name for f in layout.fields}
    keys: dict[tuple[Obis, int], int] = {}

    def key(obis: Obis, attribute: int) -> int:
        return keys.setdefault((obis, attribute), len(keys))

    steps: list[_Step] = []
    for f in layout.fields:
        if f.obis is None or f.name.endswith(("_scaler", "_unit")):
            continue
        if f.kind == "entries":
            subs = tuple(
                (sub.name, sub.obis, sub.attribute, key(sub.obis, sub.attribute))
                for sub in f.entries
                if sub.obis is not None and sub.obis != unix_time
            )
            steps.append(_Step(f.name, f.obis, f.attribute, "", key(f.obis, f.attribute), subs))
        elif f.obis != unix_time:
            at = _capture_field(f.name, names)
            steps.append(_Step(f.name, f.obis, f.attribute, at, key(f.obis, f.attribute)))
        elif f.name == "unix_time":
            steps.append(_Step(f.name, f.obis, f.attribute, "unix_time", key(f.obis, f.attribute)))
    plan = _Plan(tuple(steps), keys)
    _PLANS[(id(layout), unix_time)] = (layout, plan)
    return plan


_NO_SCALE = (None, None)


def frame_readings(
    ldn: str,
    profile: IMeterProfile,
    frame: CompactFrame,
    *,
    received: dt.datetime,
    source: str,
) -> tuple[list[Reading], MeterStatus]:
    """The readings a compact frame carries and the meter's list values it implies.

    Every field bound to an object is a reading captured at the frame's UNIX time (a field
    ``daily_x`` at ``daily_unix_time`` when the layout has one); each record of an
    ``entries`` field (a load profile) at its own UNIX time.  Scaler/unit fields
    (``*_scaler``, ``*_unit``) are not readings: they qualify the volumes, which otherwise
    take the profile's ``volume_scaler_unit``.  (On the push path: a push's 12 readings in
    some 20 µs.)
    """
    values = frame.values
    time_of = _Times(bool(profile.inverted_deviation)).of
    unix_time = profile.objects.get("unix_time", STANDARD_OBJECTS["unix_time"]).obis
    plan = _plan(frame.layout, unix_time)
    scaled = {  # the scaler_unit of attribute 2 of the objects that take one, by key
        plan.keys[(obis, 2)]: su
        for obis, su in _frame_scalers(profile, values).items()
        if (obis, 2) in plan.keys
    }
    readings: dict[tuple[int, dt.datetime | None], Reading] = {}

    def add(key: int, obis: Obis, attribute: int, value: Any, captured: Any) -> None:
        su = scaled.get(key)
        if type(value) is int or type(value) is float:  # most fields: no A-XDR to keep
            scaler, unit = su or _NO_SCALE
            reading = Reading(ldn, obis, attribute, value, received, source, captured, scaler, unit)
        else:
            ref = CosemRef(0, obis, attribute)
            reading = reading_of(
                ldn, ref, value, received=received, source=source, captured=captured, scaler_unit=su
            )
        readings[(key, captured)] = reading

    for step in plan.steps:
        value = values[step.name]
        if step.entries is None:
            add(step.key, step.obis, step.attribute, value, time_of(values.get(step.at)))
            continue
        for entry in value:
            at = time_of(entry.get("unix_time"))
            for name, obis, attribute, key in step.entries:
                add(key, obis, attribute, entry[name], at)
    frame_time = time_of(values.get("unix_time"))
    index_key = plan.keys.get((profile.objects["converted_volume_index"].obis, 2), -1)
    index = readings.get((index_key, frame_time))
    return list(readings.values()), _frame_status(ldn, profile, values, received, frame_time, index)


class _Times:
    """The meter times of one frame (date-time octet strings), each decoded once."""

    def __init__(self, inverted_deviation: bool) -> None:
        self.inverted = inverted_deviation
        self.seen: dict[Any, dt.datetime | None] = {}

    def of(self, value: Any) -> dt.datetime | None:
        try:
            return self.seen[value]
        except KeyError:
            t = self.seen[value] = meter_time(value, inverted_deviation=self.inverted)
            return t
        except TypeError:  # not hashable: not a time either
            return None


def _frame_scalers(
    profile: IMeterProfile, values: Mapping[str, Any]
) -> dict[Obis, tuple[int, int]]:
    """The scaler_unit of attribute 2 of the objects a frame's values need one for: the
    volumes (the frame's own ``volume_scaler``/``volume_unit``, else the profile's) and the
    battery."""
    objects = profile.objects
    if "volume_scaler" in values and "volume_unit" in values:
        volume = (int(values["volume_scaler"]), int(values["volume_unit"]))
    else:
        volume = (int(profile.volume_scaler_unit[0]), int(profile.volume_scaler_unit[1]))
    scaled = {objects["battery_autonomy"].obis: (0, int(profile.battery_unit))}
    alarm = objects.get("converted_volume_index_under_alarm")
    for ref in (objects["converted_volume_index"], alarm):
        if ref is not None:
            scaled[ref.obis] = volume  # (a volume before the battery, should they share one)
    return scaled


def _frame_status(
    ldn: str,
    profile: IMeterProfile,
    values: Mapping[str, Any],
    received: dt.datetime,
    frame_time: dt.datetime | None,
    index: Reading | None,
) -> MeterStatus:
    """The meter's list values a frame carries, and its last connection."""
    diagnostic = values.get("current_diagnostic", values.get("daily_diagnostic"))
    battery_value = values.get("primary_battery_residual_pct")
    valve = values.get("valve_control_state")
    return MeterStatus(
        ldn,
        connected=received,
        at=frame_time or received,
        index=index,
        diagnostic=int(diagnostic) if diagnostic is not None else None,
        battery_value=int(battery_value) if battery_value is not None else None,
        battery_unit=int(profile.battery_unit),
        valve_state=int(valve) if valve is not None else None,
    )


# --- profiles and logbooks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capture:
    """One column of a profile (IC 7 attribute 3): class id, logical name, attribute."""

    class_id: int
    obis: Obis
    attribute: int

    @classmethod
    def parse(cls, capture_objects: Any) -> tuple[Capture, ...]:
        """The columns of a capture_objects value: array of {class, LN, attr, data index}."""
        try:
            return tuple(cls(int(c[0]), Obis(bytes(c[1])), int(c[2])) for c in capture_objects)
        except (TypeError, ValueError, IndexError, DecodeError) as exc:
            raise DecodeError(f"capture objects: {exc}") from None


def _time_column(columns: Sequence[Capture]) -> int:
    for i, c in enumerate(columns):
        if c.obis in (UNIX_TIME, CLOCK):
            return i
    raise DecodeError("the profile has no time column")


def _rows(
    rows: Any, width: int, what: str, rejected: list[str] | None = None
) -> Iterable[Sequence[Any]]:
    """The rows of a profile buffer: an array of structures of ``width`` values (what a meter
    sends is checked here, not trusted).  A buffer that is not an array is a DecodeError; a
    row that is not such a structure is skipped and said in ``rejected`` with its bytes
    (without ``rejected``: a DecodeError), the others kept."""
    if not isinstance(rows, (list, tuple)) or isinstance(rows, Structure):
        raise DecodeError(f"a {what} buffer that is not an array: {type(rows).__name__}")
    for row in rows:
        problem = None
        if not isinstance(row, (list, tuple)):
            problem = f"a {what} row that is not a structure: {type(row).__name__}"
        elif len(row) != width:
            problem = f"a {what} row of {len(row)} values for {width} columns"
        if problem is None:
            yield row
        elif rejected is None:
            raise DecodeError(problem)
        else:
            rejected.append(_rejected(problem, row))


def _rejected(problem: str, row: Any) -> str:
    """A row left out, with its bytes (A-XDR, as the meter sent it) for whoever looks."""
    try:
        raw = encode_data(row).hex()
    except (CodecError, TypeError, ValueError):
        raw = repr(row)[:200]
    return f"{problem}, skipped: {raw}"


def _small(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 31:
        raise DecodeError(f"{what} {value!r} is not a number the store keeps")
    return value


def rows_to_readings(
    ldn: str,
    columns: Sequence[Capture],
    rows: Iterable[Any],
    *,
    scalers: Mapping[Obis, tuple[int, int]],
    inverted_deviation: bool,
    received: dt.datetime,
    source: str,
    rejected: list[str] | None = None,
) -> list[Reading]:
    """The readings of a load profile's rows (each column but the time one, at the row's
    time); ``scalers``: the scaler_unit of the register columns.  ``rejected``: where a row
    that does not decode is said (with its bytes) and skipped, the others kept."""
    t = _time_column(columns)
    out: dict[tuple[Obis, int, dt.datetime | None], Reading] = {}
    for row in _rows(rows, len(columns), "profile", rejected):
        try:
            at = meter_time(row[t], inverted_deviation=inverted_deviation)
            found = [
                reading_of(
                    ldn,
                    CosemRef(c.class_id, c.obis, c.attribute),
                    row[i],
                    received=received,
                    source=source,
                    captured=at,
                    scaler_unit=scalers.get(c.obis) if c.attribute == 2 else None,
                )
                for i, c in enumerate(columns)
                if i != t
            ]
        except CodecError as exc:
            if rejected is None:
                raise
            rejected.append(_rejected(f"a profile row: {exc}", row))
            continue
        out.update({(r.obis, r.attribute, at): r for r in found})
    return list(out.values())


def rows_to_events(
    ldn: str,
    logbook: Obis,
    columns: Sequence[Capture],
    rows: Iterable[Any],
    *,
    inverted_deviation: bool,
    received: dt.datetime,
    source: str,
    rejected: list[str] | None = None,
    kinds: Mapping[int, EventKind] | None = None,
) -> list[Event]:
    """The events of a logbook's rows: time, code (0.0.96.11.x.255), counter
    (0.0.96.15.x.255) when the logbook captures one; each classed (severity, category) by
    :func:`sac.eventcodes.describe`, the meter's profile's own codes first (``kinds``: its
    ``events``).  With ``rejected`` (a session), an entry that does not decode is said there
    with its bytes and skipped, the others kept; without it, a DecodeError."""
    t = _time_column(columns)
    code = next(
        (i for i, c in enumerate(columns) if (c.obis.c, c.obis.d) == (96, 11)),
        None,
    )
    if code is None:
        raise DecodeError(f"logbook {logbook} has no event code column")
    counter = next(
        (i for i, c in enumerate(columns) if (c.obis.c, c.obis.d) == (96, 15)),
        None,
    )
    events = []
    for row in _rows(rows, len(columns), "logbook", rejected):
        try:
            at = meter_time(row[t], inverted_deviation=inverted_deviation)
            if at is None:
                continue  # an entry without a time cannot be placed; the clock was unset
            number = _small(row[code], "an event code")
            count = _small(row[counter], "an event counter") if counter is not None else None
        except DecodeError as exc:
            if rejected is None:
                raise
            rejected.append(_rejected(f"a logbook entry: {exc}", row))
            continue
        kind = describe(number, kinds)
        severity, category = kind.severity.value, kind.category.value
        events.append(Event(ldn, logbook, number, at, received, source, count, severity, category))
    return events


def status_of(
    ldn: str,
    values: Mapping[str, Any],
    *,
    connected: dt.datetime,
    at: dt.datetime | None,
    index: Reading | None,
    battery_unit: int,
) -> MeterStatus:
    """The list values of a poll: ``values`` by quantity name (current_diagnostic,
    battery_autonomy, valve_state), absent when not read."""

    def integer(name: str) -> int | None:
        v = values.get(name)
        n = number_of(v)
        return int(n) if n is not None else None

    return MeterStatus(
        ldn,
        connected=connected,
        at=at or connected,
        index=index,
        diagnostic=integer("current_diagnostic"),
        battery_value=integer("battery_autonomy"),
        battery_unit=battery_unit,
        valve_state=integer("valve_state"),
    )


def text_of(value: Any) -> str:
    """A short human text for a value read (a command's result)."""
    if isinstance(value, OctetString | bytes):
        raw = bytes(value)
        if raw.isascii() and raw.decode("ascii").isprintable():
            return raw.decode("ascii")
        return raw.hex()
    return str(value)
