"""A meter's fields, each declared once: its JSON type, whether it may be null, whether a
client may change it, its rule, and its words for the OpenAPI document.

From :data:`FIELDS` come the JSON API's checks (:func:`parse_field`), the add-meter form's
(:mod:`sac.web.forms` applies the same rules) and the OpenAPI schemas of what a client
writes (:func:`write_schemas`).  The types are msgspec's: ``msgspec.convert`` checks a JSON
value against them strictly (no number for a string, no boolean for a number) and
``msgspec.json.schema`` gives their JSON Schema (2020-12, as OpenAPI 3.1 takes it).  What a
type cannot say -- an LDN's rule, an IP address, a key -- is the field's ``check``, whose
FieldError says the rule and never repeats a key.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from sac.errors import FieldError
from sac.eventcodes import Category
from sac.store.events import MAX_NOTE
from sac.store.model import ldn_problem

__all__ = [
    "CHANGE_FIELDS",
    "FIELDS",
    "KEY_RULE",
    "NEW_FIELDS",
    "POLL_MAX_S",
    "POLL_MIN_S",
    "AcknowledgeIn",
    "ConnectionOut",
    "ConnectionsOut",
    "EventOut",
    "EventsOut",
    "Field",
    "FieldError",
    "answer_schemas",
    "check_address",
    "check_ip",
    "check_ips",
    "check_key",
    "check_ldn",
    "check_pdr",
    "check_poll_interval",
    "check_profile",
    "check_system_title",
    "event_schemas",
    "kind",
    "parse_field",
    "write_schemas",
]

Check = Callable[[Any, Collection[str]], Any]

# --- the rules ------------------------------------------------------------------------------

_HEX = set(string.hexdigits)

POLL_MIN_S, POLL_MAX_S = 60, 527040 * 60  # a minute to 366 days
KEY_RULE = "A key is 16 bytes: 32 hexadecimal digits."


def _hex(text: str, size: int) -> bytes | None:
    cleaned = text.replace(" ", "").replace(":", "")
    if len(cleaned) != size * 2 or not set(cleaned) <= _HEX:
        return None
    return bytes.fromhex(cleaned)


def check_ldn(text: str) -> str:
    """A logical device name: :data:`sac.store.model.LDN_RULE`."""
    problem = ldn_problem(text)
    if problem is not None:
        raise FieldError(f"{problem[0].upper()}{problem[1:]}.")
    return text


def check_pdr(text: str) -> str:
    """A point of delivery (PDR): 14 digits."""
    if not text.isascii() or not text.isdigit() or len(text) != 14:
        raise FieldError("A PDR is 14 digits.")
    return text


def check_system_title(text: str) -> bytes:
    """A system title: 8 bytes in hexadecimal (spaces and colons between them allowed)."""
    title = _hex(text, 8)
    if title is None:
        raise FieldError("A system title is 8 bytes: 16 hexadecimal digits.")
    return title


def check_profile(text: str, profiles: Collection[str]) -> str:
    if text not in profiles:
        raise FieldError("Choose one of the installed profiles.")
    return text


def check_key(text: str) -> bytes:
    """An EK or AK: 16 bytes in hexadecimal; the error never repeats it."""
    key = _hex(text, 16)
    if key is None:
        raise FieldError(KEY_RULE)
    return key


def check_address(text: str) -> str:
    """An address to poll: host:port."""
    host, _, port = text.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise FieldError("An address to poll is host:port, e.g. 10.1.2.3:4059.")
    return text


def check_ip(text: str) -> str:
    """An IP address (v4 or v6) a meter may connect from, in its canonical form; the error
    does not repeat what was typed (it may be a key in the wrong field)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError("This is not an IP address (IPv4 or IPv6).") from None


def check_ips(items: Sequence[str]) -> tuple[str, ...]:
    """Each of ``items`` by :func:`check_ip`; the error names the first bad one by its
    position, never by its value."""
    out = []
    for position, item in enumerate(items, 1):
        try:
            out.append(check_ip(item))
        except FieldError:
            raise FieldError(
                f"Entry {position} of {len(items)} is not an IP address (IPv4 or IPv6)."
            ) from None
    return tuple(out)


def check_poll_interval(seconds: int, has_address: bool) -> int:
    """Seconds between polls: a minute to 366 days, and only for a meter with an address."""
    if not POLL_MIN_S <= seconds <= POLL_MAX_S:
        raise FieldError(f"A poll interval is {POLL_MIN_S} to {POLL_MAX_S} seconds.")
    if not has_address:
        raise FieldError("Only a meter with an address to poll has a poll interval.")
    return seconds


KEY_PATTERN = "^([0-9A-Fa-f]{2}[ :]?){15}[0-9A-Fa-f]{2}$"


# --- the declarations -----------------------------------------------------------------------


def kind(value: Any) -> str:
    """A JSON value's type, by its JSON name (never the value: it may be a key)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _doc(text: str, **schema: Any) -> msgspec.Meta:
    """The words of a type for the OpenAPI document only: the field's ``check`` enforces
    its rule, with its own message."""
    return msgspec.Meta(description=text, extra_json_schema=schema or None)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a meter a client writes: ``type`` (msgspec), ``expect`` (the type in
    words, for a refusal), ``nullable``, ``check`` (the rule), ``new_only`` (given when
    the meter is added, never changed: none yet), ``change_only`` (only in a change)."""

    name: str
    type: Any
    expect: str
    check: Check | None = None
    nullable: bool = False
    change_only: bool = False
    schema: Mapping[str, Any] = field(default_factory=dict)

    def parse(self, value: Any, profiles: Collection[str]) -> Any:
        """The value checked (FieldError otherwise); a null where the field may be null."""
        if value is None:
            if self.nullable:
                return None
            raise FieldError(f"{self.name} must not be null")
        try:
            value = msgspec.convert(value, self.type)
        except msgspec.ValidationError:
            wrong = f"{self.name} must be {self.expect}"
            if not (isinstance(value, list) and self.schema_type == "array"):  # else: items
                wrong += f", not {kind(value)}"
            raise FieldError(wrong) from None
        return self.check(value, profiles) if self.check is not None else value

    @property
    def schema_type(self) -> str:
        return str(msgspec.json.schema(self.type)["type"])

    def json_schema(self, profiles: Collection[str]) -> dict[str, Any]:
        out = dict(msgspec.json.schema(self.type))
        if self.nullable:
            out["type"] = [out["type"], "null"]
        if self.name == "profile" and profiles:
            out["enum"] = sorted(profiles)
        return {**out, **self.schema}


def _state(value: str, profiles: Collection[str]) -> str:
    if value not in ("active", "disabled"):
        raise FieldError("state must be active or disabled")
    return value


_KEY = (
    "16 bytes in hex (32 digits; spaces or colons between bytes allowed). "
    "Write-only: never returned."
)

FIELDS: Mapping[str, Field] = {
    f.name: f
    for f in (
        Field(
            "ldn",
            Annotated[
                str,
                _doc(
                    "logical device name: 16 printable ASCII characters, no space",
                    minLength=16,
                    maxLength=16,
                ),
            ],
            "a string",
            lambda v, _: check_ldn(v),
        ),
        Field(
            "pdr",
            Annotated[str, _doc("14 digits", pattern="^[0-9]{14}$")],
            "a string",
            lambda v, _: check_pdr(v),
            nullable=True,
        ),
        Field(
            "system_title",
            Annotated[str, _doc("8 bytes in hex (16 digits); how a meter's pushes are found")],
            "a string",
            lambda v, _: check_system_title(v),
            nullable=True,
        ),
        Field(
            "profile",
            Annotated[str, _doc("the meter's profile (default: the SAC's default profile)")],
            "a string",
            check_profile,
        ),
        Field(
            "address",
            Annotated[str, _doc("host:port to poll, or null")],
            "a string",
            lambda v, _: check_address(v),
            nullable=True,
        ),
        Field(
            "allowed_ips",
            Annotated[
                list[Annotated[str, _doc("an IPv4 or IPv6 address")]],
                _doc("addresses the meter may connect from (empty: any)"),
            ],
            "an array of IP address strings",
            lambda v, _: check_ips(v),
        ),
        Field(
            "poll_interval_s",
            Annotated[
                int,
                _doc(
                    "seconds between polls; only with an address",
                    minimum=POLL_MIN_S,
                    maximum=POLL_MAX_S,
                ),
            ],
            "a whole number of seconds",
            lambda v, _: check_poll_interval(v, True),
            nullable=True,
        ),
        Field(
            "ek",
            Annotated[
                str,
                _doc(
                    "Management client's encryption key (null or absent: no keys given). " + _KEY,
                    pattern=KEY_PATTERN,
                    writeOnly=True,
                ),
            ],
            "a string",
            lambda v, _: check_key(v),
            nullable=True,
        ),
        Field(
            "ak",
            Annotated[
                str,
                _doc(
                    "Management client's authentication key (null or absent: AK = EK); "
                    "only with ek. " + _KEY,
                    pattern=KEY_PATTERN,
                    writeOnly=True,
                ),
            ],
            "a string",
            lambda v, _: check_key(v),
            nullable=True,
        ),
        Field(
            "state",
            Annotated[str, _doc("active or disabled", enum=["active", "disabled"])],
            "a string",
            _state,
            change_only=True,
        ),
    )
}

NEW_FIELDS = tuple(name for name, f in FIELDS.items() if not f.change_only)
CHANGE_FIELDS = tuple(FIELDS)


def parse_field(name: str, value: Any, profiles: Collection[str]) -> Any:
    """One field's value checked by its declaration (FieldError otherwise)."""
    return FIELDS[name].parse(value, profiles)


def write_schemas(profiles: Collection[str]) -> dict[str, Any]:
    """The OpenAPI schemas of what a client writes: a new meter, a change (by LDN, or of
    the meter of the path)."""
    fields = {name: f.json_schema(profiles) for name, f in FIELDS.items()}
    change = {k: v for k, v in fields.items() if k != "ldn"}
    return {
        "NewMeter": {
            "type": "object",
            "required": ["ldn"],
            "additionalProperties": False,
            "properties": {k: fields[k] for k in NEW_FIELDS},
        },
        "MeterChange": {
            "type": "object",
            "required": ["ldn"],
            "additionalProperties": False,
            "description": "the meter (ldn) and the fields to change; ek (and ak) replace "
            "its Management keys",
            "properties": {**fields, "ldn": {"type": "string"}},
        },
        "MeterChangeOne": {
            "type": "object",
            "additionalProperties": False,
            "properties": change,
        },
    }


# --- events and alarms ----------------------------------------------------------------------
# what the API answers about events, and what a client sends to acknowledge an alarm: msgspec
# structs, whose JSON Schema is the OpenAPI document's (event_schemas)

_TIME = msgspec.Meta(extra_json_schema={"format": "date-time"}, description="UTC, ISO-8601")
_CATEGORIES = [c.value for c in Category]


class AcknowledgementOut(msgspec.Struct):
    """Who acknowledged an alarm, when, and their note."""

    by: str
    at: Annotated[str, _TIME]
    note: str | None


class EventOut(msgspec.Struct):
    """One event of a meter's logbook, in words."""

    id: Annotated[int, msgspec.Meta(description="the store's id (an alarm's, to acknowledge)")]
    ldn: str
    logbook: Annotated[str, msgspec.Meta(description="the logbook's logical name")]
    code: Annotated[int, msgspec.Meta(description="the UNI/TS event code")]
    name_it: Annotated[str, msgspec.Meta(description="what it is, in Italian")]
    name_en: Annotated[str, msgspec.Meta(description="what it is, in English")]
    category: Annotated[str, msgspec.Meta(extra_json_schema={"enum": _CATEGORIES})]
    severity: Annotated[
        str,
        msgspec.Meta(
            description="alarm (open until an operator acknowledges it), warning, info",
            extra_json_schema={"enum": ["alarm", "warning", "info"]},
        ),
    ]
    occurred: Annotated[str, _TIME]
    received: Annotated[str, _TIME]
    source: Annotated[str, msgspec.Meta(description="a push template or a poll")]
    counter: Annotated[int | None, msgspec.Meta(description="the meter's event counter")]
    open: Annotated[bool, msgspec.Meta(description="an alarm not acknowledged yet")]
    acknowledged: AcknowledgementOut | None


class EventsOut(msgspec.Struct):
    """A page of events or alarms; ``cursor`` continues it (null: the last page)."""

    events: list[EventOut]
    cursor: str | None


class AcknowledgeIn(msgspec.Struct, forbid_unknown_fields=True):
    """An operator's acknowledgement of an alarm: a note, optional."""

    note: Annotated[str, msgspec.Meta(max_length=MAX_NOTE)] | None = None


def event_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of the events' answers and of an acknowledgement."""
    _, components = msgspec.json.schema_components(
        [EventsOut, AcknowledgeIn], ref_template="#/components/schemas/{name}"
    )
    return components


# --- what the history routes answer (issue 21) ----------------------------------------------
# Declared once: the answers are built from these types (msgspec.to_builtins) and the OpenAPI
# document's schemas come from them (:func:`read_schemas`).

_Time = Annotated[str, msgspec.Meta(description="UTC, ISO-8601 with offset")]
_Decimal = Annotated[
    str,
    msgspec.Meta(
        description="scaled, exact decimal as a string (never a float)",
        pattern="^-?[0-9]+(\\.[0-9]+)?$",
    ),
]


class ObjectReading(msgspec.Struct, kw_only=True):
    """One stored value of an object, with its capture and receipt times."""

    value: _Decimal | None = msgspec.field(default=None)
    unit: str | None = None
    unit_code: int | None = None
    raw: (
        Annotated[str, msgspec.Meta(description="A-XDR bytes in hex: a value not a number")] | None
    ) = None
    text: Annotated[str, msgspec.Meta(description="as the pages show it")]
    flags: list[str] = msgspec.field(default_factory=list)
    captured: _Time
    received: _Time
    source: Annotated[str, msgspec.Meta(description="a push template or a poll")]


class ObjectReadings(msgspec.Struct, kw_only=True):
    """A page of one object's readings of one meter, in capture order."""

    ldn: str
    pdr: str | None
    object: str
    obis: str
    attribute: int
    readings: list[ObjectReading]
    next: Annotated[str, msgspec.Meta(description="the cursor of the next page")] | None


class GasDay(msgspec.Struct, kw_only=True):
    """One gas day, 06:00 to 06:00 Europe/Rome (23 or 25 hours on daylight-saving days)."""

    day: Annotated[str, msgspec.Meta(description="the date the gas day starts on")]
    start: _Time
    end: _Time
    volume: Annotated[str, msgspec.Meta(description="null: a gap, no index at one end")] | None
    since: Annotated[str, msgspec.Meta(description="capture of the day before's last index")] | None
    until: Annotated[str, msgspec.Meta(description="capture of the day's last index")] | None


class DailyConsumption(msgspec.Struct, kw_only=True):
    """A meter's consumption per gas day; a missing day is null, never folded."""

    ldn: str
    pdr: str | None
    unit: str | None
    days: list[GasDay]


class MonthStartIndex(msgspec.Struct, kw_only=True):
    """A meter (by PDR) and its index at the gas month's start (null: none captured in the
    gas day ending then)."""

    ldn: str
    pdr: str | None
    index: ObjectReading | None


class MonthStartExport(msgspec.Struct, kw_only=True):
    """For billing: each meter's index at a gas month's start, by meter, in pages."""

    year: int
    month: int
    month_start: _Time
    rows: list[MonthStartIndex]
    next: Annotated[str, msgspec.Meta(description="the cursor of the next page")] | None


READ_TYPES = (ObjectReadings, DailyConsumption, MonthStartExport)


def read_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of the history routes' answers, from their declarations."""
    _, components = msgspec.json.schema_components(
        READ_TYPES, ref_template="#/components/schemas/{name}"
    )
    return components


# --- what the API answers: a meter's connections ------------------------------------------


class ConnectionOut(msgspec.Struct, forbid_unknown_fields=True):
    """One session with the meter: a push (it called in) or a poll (the SAC dialled it)."""

    started: Annotated[str, _doc("when it connected: UTC, ISO-8601, offset", format="date-time")]
    peer: Annotated[str, _doc("where it came from (a push) or the address dialled (a poll)")]
    kind: Annotated[str, _doc("push or poll", enum=["push", "poll"])]
    outcome: Annotated[
        str,
        _doc(
            "how it ended: stored, spooled, commands, done, partial, or why not (a refusal "
            "such as unknown-meter or ip-not-allowed, a limit such as push-timeout, failed)"
        ),
    ]
    duration_ms: Annotated[int, _doc("connection to its end, milliseconds")]
    read: Annotated[list[str], _doc("the quantities read beyond the push frame")]
    skipped: Annotated[list[str], _doc("what could not be read, each with why")]
    detail: Annotated[str | None, _doc("why it was refused or failed, or a note on its end")]


class ConnectionsOut(msgspec.Struct, forbid_unknown_fields=True):
    """A page of a meter's connections, oldest first."""

    connections: list[ConnectionOut]
    next: Annotated[str | None, _doc("the cursor of the next page (after=); null: the last page")]


def answer_schemas() -> dict[str, Any]:
    """The OpenAPI schemas of the answers declared here (msgspec's JSON Schema)."""
    _, components = msgspec.json.schema_components(
        [ConnectionsOut], ref_template="#/components/schemas/{name}"
    )
    return dict(components)
