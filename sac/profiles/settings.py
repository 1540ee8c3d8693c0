"""A meter's settings as data: what an operator may edit, where it lives, its A-XDR type, how
people write it, its bounds, and whether reading it back confirms it.

Each :class:`Setting` names a quantity of the profile's object map and an attribute, so a
vendor profile with other OBIS codes edits its own objects; a profile lists its settings
(``MeterProfile.settings``: :data:`UNI_TS_SETTINGS` by default; a vendor adds items to it or
leaves some out with :func:`without`).  Its :class:`Shape` turns the text of a form
(``"05:00, 17:30"``) or a typed JSON value (:mod:`sac.dlms.typedjson`) into the value a SET
sends, refusing a value out of bounds or of another shape with the reason, and writes a value
read back as text.  Both ways go through the text, so a typed value the API sends passes the
same checks as a form's.

The generic catalogue (docs/uni-ts-11291.md §1.4, §1.6, §1.7): the PDR; the clock (set by
the ``sync-clock`` command to the SAC's time, Italian deviation sign); the push scheduler's
times (IC 22 execution_time) and the push setup's pushed frame, destination, window and
randomisation (IC 40); the start of the end-of-billing period; the valve's configuration,
PIN and opening validity; the no-communication and tampering thresholds (IC 21).  Where the
public sources give no type (the validity's unit, the billing start's encoding) the choice is
marked [U] and a vendor profile can replace the item.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sac.dlms import Obis
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Enum,
    Integer,
    LongUnsigned,
    OctetString,
    Structure,
    Unsigned,
    VisibleString,
    encode_data,
)
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.datatypes import TypedInt
from sac.dlms.typedjson import TypedJsonError, from_json
from sac.errors import SacError

__all__ = [
    "SESSION_TIMEOUTS",
    "UNI_TS_SETTINGS",
    "DailyTimes",
    "DailyWindows",
    "Destination",
    "Digits",
    "LocalDateTime",
    "Number",
    "PushedFrame",
    "Setting",
    "SettingError",
    "Shape",
    "Threshold",
    "Timeouts",
    "setting_of",
    "setting_problems",
    "setting_ref",
    "without",
]

ROME = ZoneInfo("Europe/Rome")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_WILD_DATE = CosemDate(None, None, None, None)


class SettingError(SacError, ValueError):
    """A value a setting does not take, and why (for people, next to the field)."""


class Meter(Protocol):
    """What a shape needs of the meter's profile."""

    @property
    def inverted_deviation(self) -> bool: ...

    @property
    def layouts(self) -> Mapping[int, Any]: ...


class Shape:
    """A setting's value: its text for people both ways (:meth:`parse`, :meth:`show`)."""

    hint = ""  # how to write it, for the form

    def parse(self, text: str, meter: Meter) -> Any:
        raise NotImplementedError

    def show(self, value: Any, meter: Meter) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Shape):
    """One integer of one A-XDR type, in bounds (``low``..``high``)."""

    type: type[TypedInt]
    low: int
    high: int

    @property
    def hint(self) -> str:  # type: ignore[override]
        return f"{self.low}..{self.high}"

    def parse(self, text: str, meter: Meter) -> Any:
        try:
            number = int(text.strip())
        except ValueError:
            raise SettingError(f"{text!r} is not a whole number") from None
        if not self.low <= number <= self.high:
            raise SettingError(f"{number} is not in {self.low}..{self.high}")
        return self.type(number)

    def show(self, value: Any, meter: Meter) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(f"{value!r} is not a whole number")
        return str(int(value))


@dataclass(frozen=True)
class Threshold(Number):
    """An IC 21 register monitor's thresholds: an array of one integer."""

    def parse(self, text: str, meter: Meter) -> Any:
        return Array([super().parse(text, meter)])

    def show(self, value: Any, meter: Meter) -> str:
        if not isinstance(value, Array) or len(value) != 1:
            raise SettingError("the thresholds are an array of one value")
        return super().show(value[0], meter)


@dataclass(frozen=True)
class Digits(Shape):
    """A visible-string of exactly ``size`` digits (the PDR)."""

    size: int

    @property
    def hint(self) -> str:  # type: ignore[override]
        return f"{self.size} digits"

    def parse(self, text: str, meter: Meter) -> Any:
        text = text.strip()
        if not (text.isascii() and text.isdigit() and len(text) == self.size):
            raise SettingError(f"{self.size} digits, not {text!r}")
        return VisibleString(text)

    def show(self, value: Any, meter: Meter) -> str:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if not isinstance(text, str):
            raise SettingError(f"{value!r} is not a string")
        return text


def _hhmm(text: str) -> CosemTime:
    m = _HHMM.match(text.strip())
    if not m:
        raise SettingError(f"{text.strip()!r} is not a time of day HH:MM")
    return CosemTime(int(m[1]), int(m[2]), 0, 0)


def _show_time(raw: Any) -> str:
    t = CosemTime.from_bytes(bytes(raw))
    if t.hour is None or t.minute is None:
        raise SettingError("a time without hour or minute")
    return f"{t.hour:02d}:{t.minute:02d}"


@dataclass(frozen=True)
class DailyTimes(Shape):
    """An IC 22 execution_time: up to ``most`` times of day, each day (date wildcard)."""

    most: int = 4
    hint = "HH:MM, up to 4, comma-separated (every day)"

    def parse(self, text: str, meter: Meter) -> Any:
        parts = [p for p in text.split(",") if p.strip()]
        if not 1 <= len(parts) <= self.most:
            raise SettingError(f"1 to {self.most} times of day HH:MM")
        times = sorted({_hhmm(p).to_bytes() for p in parts})
        wild = OctetString(_WILD_DATE.to_bytes())
        return Array([Structure([OctetString(t), wild]) for t in times])

    def show(self, value: Any, meter: Meter) -> str:
        if not isinstance(value, Array) or len(value) > self.most:
            raise SettingError(f"execution_time is an array of at most {self.most}")
        shown = []
        for entry in value:
            if not isinstance(entry, Structure) or len(entry) != 2:
                raise SettingError("an execution_time entry is a {time, date} structure")
            if CosemDate.from_bytes(bytes(entry[1])) != _WILD_DATE:
                raise SettingError("an execution_time on a given date (not every day)")
            shown.append(_show_time(entry[0]))
        return ", ".join(shown)


def _daily(t: CosemTime) -> OctetString:
    """A date-time of any day at ``t`` (date and deviation wildcards): a daily window's edge."""
    return OctetString(
        CosemDateTime(None, None, None, None, t.hour, t.minute, 0, 0, None, None).to_bytes()
    )


@dataclass(frozen=True)
class DailyWindows(Shape):
    """An IC 40 communication_window: up to ``most`` daily windows ``HH:MM-HH:MM``; empty
    (``""``): no window, the meter may push at any time."""

    most: int = 4
    hint = "HH:MM-HH:MM, up to 4, comma-separated; empty: any time"

    def parse(self, text: str, meter: Meter) -> Any:
        parts = [p for p in text.split(",") if p.strip()]
        if len(parts) > self.most:
            raise SettingError(f"at most {self.most} windows")
        windows = []
        for part in parts:
            start, sep, end = part.partition("-")
            if not sep:
                raise SettingError(f"{part.strip()!r} is not a window HH:MM-HH:MM")
            a, b = _hhmm(start), _hhmm(end)
            if (a.hour, a.minute) == (b.hour, b.minute):
                raise SettingError(f"{part.strip()!r} is an empty window")
            windows.append(Structure([_daily(a), _daily(b)]))
        return Array(windows)

    def show(self, value: Any, meter: Meter) -> str:
        if not isinstance(value, Array):
            raise SettingError("communication_window is an array")
        shown = []
        for entry in value:
            a, b = (CosemDateTime.from_bytes(bytes(e)) for e in entry)
            shown.append(f"{_show_time(a.time.to_bytes())}-{_show_time(b.time.to_bytes())}")
        return ", ".join(shown)


TRANSPORTS = {"tcp": 0, "udp": 1}  # IC 40 transport_service (Blue Book)


@dataclass(frozen=True)
class Destination(Shape):
    """An IC 40 send_destination_and_method: ``tcp://host:port`` or ``udp://host:port``, the
    frames in A-XDR (message type 0)."""

    hint = "tcp://host:port or udp://host:port"

    def parse(self, text: str, meter: Meter) -> Any:
        scheme, sep, address = text.strip().partition("://")
        host, colon, port = address.rpartition(":")
        if not sep or scheme not in TRANSPORTS or not colon or not host:
            raise SettingError(f"{text.strip()!r} is not tcp://host:port or udp://host:port")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingError(f"port {port!r} is not 1..65535")
        if len(address) > 64 or not all(c.isalnum() or c in ".-:[]" for c in host):
            raise SettingError(f"{host!r} is not a host name or address")
        return Structure([Enum(TRANSPORTS[scheme]), OctetString(address.encode("ascii")), Enum(0)])

    def show(self, value: Any, meter: Meter) -> str:
        transport, address, _message = value
        names = {v: k for k, v in TRANSPORTS.items()}
        scheme = names.get(int(transport), f"transport-{int(transport)}")
        return f"{scheme}://{bytes(address).decode('ascii', 'replace')}"


@dataclass(frozen=True)
class LocalDateTime(Shape):
    """A COSEM date-time in an octet-string, written as Italian local time
    ``YYYY-MM-DD HH:MM`` (the profile's deviation sign)."""

    hint = "YYYY-MM-DD HH:MM (Italian time)"

    def parse(self, text: str, meter: Meter) -> Any:
        try:
            naive = dt.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M")
        except ValueError:
            raise SettingError(f"{text.strip()!r} is not YYYY-MM-DD HH:MM") from None
        local = naive.replace(tzinfo=ROME)
        cosem = CosemDateTime.from_datetime(local, inverted_deviation=meter.inverted_deviation)
        return OctetString(cosem.to_bytes())

    def show(self, value: Any, meter: Meter) -> str:
        cosem = CosemDateTime.from_bytes(bytes(value))
        when = cosem.to_datetime(inverted_deviation=meter.inverted_deviation)
        if when.tzinfo is not None:
            when = when.astimezone(ROME)
        return when.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class PushedFrame(Shape):
    """An IC 40 push_object_list of one compact data object (IC 62, attribute 2): the
    template id of a frame the profile has a layout for (docs/uni-ts-11291.md §1.7)."""

    hint = "a compact-frame template id"

    def parse(self, text: str, meter: Meter) -> Any:
        try:
            template = int(text.strip())
        except ValueError:
            raise SettingError(f"{text.strip()!r} is not a template id") from None
        if template not in meter.layouts:
            known = ", ".join(str(t) for t in sorted(meter.layouts))
            raise SettingError(f"this meter has no compact frame {template} (it has {known})")
        ln = bytes(Obis.from_groups(0, 0, 66, 0, template))
        entry = Structure([LongUnsigned(62), OctetString(ln), Integer(2), LongUnsigned(0)])
        return Array([entry])

    def show(self, value: Any, meter: Meter) -> str:
        if not isinstance(value, Array) or len(value) != 1:
            raise SettingError("push_object_list of one compact frame expected")
        class_id, ln, _attribute, _ = value[0]
        a, b, c, d, e, f = Obis(bytes(ln)).groups
        if int(class_id) != 62 or (a, b, c, d, f) != (0, 0, 66, 0, 255):
            raise SettingError(f"pushes {int(class_id)}/{Obis(bytes(ln))}, not a compact frame")
        return str(e)


@dataclass(frozen=True)
class Timeouts(Shape):
    """Session timeouts (IC 1 structure of three double-long-unsigned seconds: session max
    duration, inactivity, network attach; docs/uni-ts-11291.md §1.7)."""

    hint = "max session, inactivity, network attach: seconds, comma-separated"

    def parse(self, text: str, meter: Meter) -> Any:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) <= 86_400 for p in parts):
            raise SettingError("three numbers of seconds, 1..86400, comma-separated")
        return Structure([DoubleLongUnsigned(int(p)) for p in parts])

    def show(self, value: Any, meter: Meter) -> str:
        if not isinstance(value, Structure) or len(value) != 3:
            raise SettingError("three timeouts expected")
        return ", ".join(str(int(v)) for v in value)


@dataclass(frozen=True)
class Setting:
    """One editable item of a meter."""

    key: str  # unique in a profile; what the API and the commands name
    label: str  # for people
    quantity: str  # a key of the profile's ``objects``
    attribute: int
    shape: Shape
    unit: str = ""
    help: str = ""
    client: str = "management"  # which client writes it
    read_back: bool = True  # a GET after the SET confirms it
    secret: bool = False  # never shown (a PIN): the page shows whether it is set
    command: str = "set-setting"  # the command kind that writes it

    def parse(self, text: Any, meter: Meter) -> Any:
        """The A-XDR value of a form's text; SettingError says why not."""
        if not isinstance(text, str):
            raise SettingError("must be text")
        return self.shape.parse(text, meter)

    def show(self, value: Any, meter: Meter) -> str:
        """The text of a value this setting holds (read back, or to send); SettingError when
        the value does not have its shape."""
        try:
            return self.shape.show(value, meter)
        except SettingError:
            raise
        except (SacError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise SettingError(f"not of this setting's shape: {exc}") from None

    def value_of(self, given: Any, meter: Meter) -> tuple[Any, str]:
        """The value to send and its text, from the text of a form or the API, or from a
        typed JSON value (``{"type": ..., "value": ...}``), which must have the setting's
        shape and bounds: it is written as text and read again."""
        if isinstance(given, dict):
            try:
                typed = from_json(given)
            except TypedJsonError as exc:
                raise SettingError(str(exc)) from None
            text = self.show(typed, meter)
            value = self.parse(text, meter)
            if encode_data(value) != encode_data(typed):
                raise SettingError(f"not of this setting's shape (as text: {text!r})")
            return value, text
        if isinstance(given, int) and not isinstance(given, bool):
            given = str(given)
        value = self.parse(given, meter)
        return value, self.show(value, meter)


def setting_of(profile: Any, key: str) -> Setting | None:
    """The setting ``key`` of a profile (its ``settings``), or None."""
    return next((s for s in profile.settings if s.key == key), None)


def setting_ref(profile: Any, setting: Setting) -> Any:
    """The attribute a setting of ``profile`` lives in (a ``CosemRef``)."""
    return profile.objects[setting.quantity].at(setting.attribute)


def setting_problems(settings: Iterable[Setting], objects: Mapping[str, Any]) -> list[str]:
    """What is wrong with a profile's settings, for its validation."""
    problems, seen = [], set()
    for s in settings:
        if not isinstance(s, Setting):
            problems.append(f"setting {s!r} is not a Setting")
            continue
        if s.key in seen:
            problems.append(f"setting {s.key!r} twice")
        seen.add(s.key)
        if s.quantity not in objects:
            problems.append(f"setting {s.key!r}: {s.quantity!r} is not in its objects")
        if s.command not in ("set-setting", "sync-clock"):
            problems.append(f"setting {s.key!r}: command {s.command!r} is unknown")
    return problems


def without(settings: Iterable[Setting], *keys: str) -> tuple[Setting, ...]:
    """``settings`` less the items ``keys`` (a vendor profile hides what its meters lack)."""
    unknown = set(keys) - {s.key for s in settings}
    if unknown:
        raise KeyError(f"no settings {', '.join(sorted(unknown))}")
    return tuple(s for s in settings if s.key not in keys)


_PUSH = "push_setup"
UNI_TS_SETTINGS: tuple[Setting, ...] = (
    Setting("pdr", "PDR (point of redelivery)", "pdr", 2, Digits(14)),
    Setting(
        "clock",
        "Clock",
        "clock",
        2,
        LocalDateTime(),
        help="synchronised to the SAC's time, Italian deviation sign",
        command="sync-clock",
    ),
    Setting(
        "push_times",
        "Push times",
        "push_schedule",
        4,
        DailyTimes(),
        help="when the meter calls the SAC each day (push scheduler, IC 22)",
    ),
    Setting("push_frame", "Pushed compact frame", _PUSH, 2, PushedFrame(), help="its template id"),
    Setting("push_destination", "Push destination", _PUSH, 3, Destination()),
    Setting("push_window", "Push window", _PUSH, 4, DailyWindows()),
    Setting(
        "push_randomisation",
        "Push randomisation",
        _PUSH,
        5,
        Number(LongUnsigned, 0, 3600),
        unit="s",
        help="a random delay up to this, so a fleet does not call at once",
    ),
    Setting(
        "billing_period_start",
        "End-of-billing period start",
        "billing_period_start",
        2,
        LocalDateTime(),
        help="[U] encoded as a COSEM date-time",
    ),
    Setting(
        "valve_configuration",
        "Valve configuration (PGV)",
        "valve_configuration",
        2,
        Number(LongUnsigned, 0, 0xFFFF),
        help="a 16-bit map",
    ),
    Setting(
        "valve_pin",
        "Valve PIN",
        "valve_pin",
        2,
        Number(LongUnsigned, 0, 9999),
        help="the PIN the customer types to open; 0: none",
        read_back=False,
        secret=True,
    ),
    Setting(
        "opening_validity",
        "Opening validity",
        "opening_validity",
        2,
        Number(LongUnsigned, 1, 65535),
        unit="min",
        help="[U] how long an enabled opening stays valid",
    ),
    Setting(
        "no_communication_days",
        "Days without communication before the valve closes",
        "no_communication_threshold",
        2,
        Threshold(LongUnsigned, 1, 3650),
        unit="days",
    ),
    Setting(
        "tamper_attempts",
        "Tampering attempts before the valve closes",
        "tamper_threshold",
        2,
        Threshold(Unsigned, 1, 255),
    ),
)
SESSION_TIMEOUTS = Setting(
    "session_timeouts",
    "Session timeouts",
    "session_timeouts",
    2,
    Timeouts(),
    unit="s",
    help="max session, inactivity, network attach (HW-EI7)",
)
