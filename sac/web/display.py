"""How stored values read on a page: units, scaled numbers, diagnostics, valve states, times.

Pure functions, shared by the templates (as Jinja2 filters) and the JSON the pages poll.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sac.errors import SacError
from sac.eventcodes import describe
from sac.profiles import STANDARD_OBJECTS
from sac.services.readings import ROME
from sac.store import Event

__all__ = [
    "UNITS",
    "VALVE_STATES",
    "diagnostic_flags",
    "event_row",
    "local_time",
    "meter_row",
    "profile_bits",
    "scaled",
    "unit_name",
    "valve_name",
]

# DLMS unit codes (IEC 62056-6-2, enum of scaler_unit) the meters use
UNITS: Mapping[int, str] = {
    1: "a",
    2: "mo",
    3: "wk",
    4: "d",
    5: "h",
    6: "min",
    7: "s",
    9: "°C",
    13: "m³",
    14: "Sm³",  # m³ of converted (corrected) volume: standard cubic metres
    15: "m³/h",
    16: "Sm³/h",
    17: "m³/d",
    18: "Sm³/d",
    33: "A",
    35: "V",
    56: "%",
    255: "",
}

# IC 70 control_state (docs/uni-ts-11291.md §1.1)
VALVE_STATES: Mapping[int, str] = {
    0: "closed",
    1: "open",
    2: "closed, opening enabled",
}


def unit_name(unit: int | None) -> str:
    if unit is None:
        return ""
    return UNITS.get(unit, f"unit {unit}")


def scaled(value: Any, scaler: int | None) -> Decimal | None:
    """A stored number times 10^scaler, exactly (no float rounding on a billing index)."""
    if value is None:
        return None
    number = Decimal(str(value))
    return number.scaleb(scaler) if scaler else number


def quantity(value: Any, scaler: int | None, unit: int | None) -> str:
    """``12345.678 Sm³``: the scaled value with as many decimals as the scaler gives."""
    number = scaled(value, scaler)
    if number is None:
        return "—"
    places = max(0, -(scaler or 0))
    text = f"{number:,.{places}f}".replace(",", "\u202f")  # thin space between thousands
    name = unit_name(unit)
    return f"{text} {name}" if name else text


def battery(value: int | None, unit: int | None) -> str:
    if value is None:
        return "—"
    if unit == 4:
        return f"{value:,} days".replace(",", "\u202f")
    return f"{value} {unit_name(unit)}".strip()


def diagnostic_flags(value: int | None, bits: Mapping[int, str]) -> list[str]:
    """The names of the bits set in a diagnostic bitmask, where the profile knows them; the
    bits it does not know as ``unknown bit N``.  Empty when no bit is set."""
    if not value:
        return []
    return [
        bits.get(bit, f"unknown bit {bit}") for bit in range(value.bit_length()) if value >> bit & 1
    ]


def diagnostic(value: int | None, bits: Mapping[int, str]) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "OK"
    raw = f"0x{value:04X}"
    if not bits:
        return raw
    return f"{', '.join(diagnostic_flags(value, bits))} ({raw})"


def valve_name(state: int | None) -> str:
    if state is None:
        return "—"
    return VALVE_STATES.get(state, f"state {state}")


def local_time(value: dt.datetime | None, seconds: bool = False) -> str:
    """A time as the operators read it: Italian local time."""
    if value is None:
        return "never"
    local = value.astimezone(ROME)
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def ago(value: dt.datetime | None, now: dt.datetime) -> str:
    """How long ago, roughly: ``5 min``, ``3 h``, ``12 days``."""
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 172800:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def profile_of(registry: Any, profile_name: str) -> Any:
    """A meter's profile; None when it is not installed."""
    try:
        return registry.match(assigned=profile_name)
    except SacError:
        return None


async def profiles_by_ldn(store: Any, registry: Any, ldns: Iterable[str]) -> dict[str, Any]:
    """{LDN: profile} of a page's meters (their own event names), in one query; None for a
    meter gone or a profile not installed."""
    names = await store.meters.profiles(set(ldns))
    return {ldn: profile_of(registry, names[ldn]) if ldn in names else None for ldn in ldns}


def profile_bits(registry: Any, profile_name: str) -> Mapping[int, str]:
    """The names of the diagnostic bits of a meter's profile ({} when it is not installed)."""
    return getattr(profile_of(registry, profile_name), "diagnostic_bits", {}) or {}


# the logbooks by the quantity the profile's objects name them
LOGBOOKS: Mapping[str, str] = {
    "event_logbook": "event logbook",
    "metrological_logbook": "metrological logbook",
    "parameter_logbook": "parameter logbook",
}


def event_row(event: Event, profile: Any) -> dict[str, Any]:
    """A logbook entry in words: its name and class (:mod:`sac.eventcodes`, the profile's own
    codes first), the logbook it came from, and for an alarm whether it is open or who
    acknowledged it."""
    kind = describe(event.code, getattr(profile, "events", None))
    objects = getattr(profile, "objects", None) or STANDARD_OBJECTS
    logbook = next(
        (LOGBOOKS.get(q, q) for q, target in objects.items() if target.obis == event.logbook),
        str(event.logbook),
    )
    return dict(
        id=event.id,
        ldn=event.ldn,
        occurred=event.occurred,
        received=event.received,
        logbook=logbook,
        code=event.code,
        name=kind.name("en"),
        # as classed when stored; an event stored before classes were kept, classed now
        category=event.category or kind.category.value,
        severity=event.severity or kind.severity.value,
        counter=event.counter,
        open_alarm=event.open_alarm,
        acknowledgement=event.acknowledgement,
    )


def meter_row(registry: Any, m: Any, now: dt.datetime, open_alarms: int = 0) -> dict[str, Any]:
    """A meter as a row of the meter list (and the head of its page); ``open_alarms``: its
    alarms no operator has acknowledged."""
    bits = profile_bits(registry, m.profile)
    return dict(
        ldn=m.ldn,
        pdr=m.pdr or "",
        index=quantity(m.index_value, m.index_scaler, m.index_unit),
        diagnostic=diagnostic(m.diagnostic, bits),
        alarm=bool(m.diagnostic) or open_alarms > 0,
        open_alarms=open_alarms,
        battery=battery(m.battery_value, m.battery_unit),
        last=local_time(m.last_connection),
        ago=ago(m.last_connection, now),
        valve=valve_name(m.valve_state),
        valve_state=m.valve_state,
        disabled=m.state.value != "active",
    )
