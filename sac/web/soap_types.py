"""The SOAP API's types, faults and conversions (:mod:`sac.web.soap`): what the WSDL
declares, and how the store's objects become it."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from spyne import (
    Array,
    Boolean,
    ComplexModel,
    Date,
    DateTime,
    Fault,
    Integer,
    Integer64,
    Unicode,
)
from spyne import Decimal as XsDecimal

from sac import gasday
from sac.eventcodes import describe
from sac.store import Command, CommandTransition, Connection, Event, Meter, Reading
from sac.web import display
from sac.web.api_commands import shown_params
from sac.web.errors import soap_fault

NS = "urn:sac:erp:1"
CREDENTIALS_TTL = dt.timedelta(seconds=60)
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
MAX_METERS_PAGE = 1000
ACTIONS = {"close": "valve-close", "enable-opening": "valve-enable-opening"}


# --- types --------------------------------------------------------------------------------


class _Type(ComplexModel):
    __namespace__ = NS


def _required(kind: Any, doc: str) -> Any:
    return kind.customize(min_occurs=1, nillable=False, doc=doc)


def _optional(kind: Any, doc: str) -> Any:
    return kind.customize(min_occurs=0, doc=doc)


class Quantity(_Type):
    """A number with its unit: ``value`` is exact (scaler applied), ``unit`` the DLMS unit
    code (13 m³, 14 Sm³ of converted volume, 4 days), ``unitName`` its name."""

    _type_info = [
        ("value", _required(XsDecimal, "the value, exact")),
        ("unit", _optional(Integer, "DLMS unit code")),
        ("unitName", _optional(Unicode, "the unit's name, e.g. Sm³")),
    ]


class MeterInfo(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "logical device name (16 characters)")),
        ("pdr", _optional(Unicode, "punto di riconsegna (14 digits)")),
        ("systemTitle", _optional(Unicode, "8 bytes in hex")),
        ("profile", _required(Unicode, "meter profile (plugin) name")),
        ("state", _required(Unicode, "active or disabled")),
        ("created", _required(DateTime, "when it was added")),
        ("updated", _required(DateTime, "when its set-up last changed")),
        ("lastConnection", _optional(DateTime, "when it was last heard from")),
        ("index", _optional(Quantity, "converted-volume index, last known")),
        ("indexCaptured", _optional(DateTime, "when the meter measured that index")),
        ("diagnostic", _optional(Integer64, "diagnostic bitmask, last known")),
        ("diagnosticFlags", _optional(Array(Unicode), "names of the diagnostic bits set")),
        ("battery", _optional(Quantity, "battery autonomy, last known")),
        ("valveState", _optional(Integer, "0 closed, 1 open, 2 closed with opening enabled")),
        ("valveStateName", _optional(Unicode, "the valve state's name")),
        ("valuesAt", _optional(DateTime, "when these last values were received")),
    ]


class MeterPage(_Type):
    _type_info = [
        ("meters", _required(Array(MeterInfo), "this page's meters, by LDN")),
        ("next", _optional(Unicode, "pass as 'after' for the next page; absent on the last")),
        ("total", _required(Integer, "meters matching, over all pages")),
    ]


class ReadingInfo(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("pdr", _optional(Unicode, "the meter's point of delivery (PDR), when it has one")),
        ("obis", _required(Unicode, "the COSEM object's logical name, e.g. 7.0.13.2.0.255")),
        ("attribute", _required(Integer, "the attribute read (2: value)")),
        ("value", _optional(Quantity, "the number read, when it is one")),
        ("raw", _optional(Unicode, "the value as received, hex, when it is not a number")),
        ("captured", _required(DateTime, "when the meter measured it")),
        ("received", _required(DateTime, "when the SAC received it")),
        ("source", _required(Unicode, "how it came: a push template or a poll")),
    ]


class ReadingPage(_Type):
    _type_info = [
        ("readings", _required(Array(ReadingInfo), "per meter, then in time order")),
        ("cursor", _optional(Unicode, "pass back to resume after this page; absent: done")),
    ]


class GasDayInfo(_Type):
    _type_info = [
        ("day", _required(Date, "the date the gas day starts on")),
        ("start", _required(DateTime, "06:00 Europe/Rome of that date")),
        ("end", _required(DateTime, "06:00 of the next: 23 or 25 hours on daylight-saving days")),
        ("volume", _optional(Quantity, "consumption; absent: a gap (no index at one end)")),
        ("since", _optional(DateTime, "capture of the day before's last index")),
        ("until", _optional(DateTime, "capture of the day's last index")),
    ]


class DailyConsumption(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("pdr", _optional(Unicode, "its PDR")),
        ("days", _required(Array(GasDayInfo), "one a gas day, both ends included")),
    ]


class MonthStartInfo(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("pdr", _optional(Unicode, "its PDR")),
        ("index", _optional(ReadingInfo, "the index closing the gas month; absent: none")),
    ]


class MonthStartPage(_Type):
    _type_info = [
        ("monthStart", _required(DateTime, "06:00 Europe/Rome of the month's first day")),
        ("rows", _required(Array(MonthStartInfo), "by meter")),
        ("cursor", _optional(Unicode, "pass back to resume after this page; absent: done")),
    ]


class EventInfo(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("logbook", _required(Unicode, "the logbook's logical name")),
        ("code", _required(Integer, "the event code")),
        ("name_it", _required(Unicode, "what it is, in Italian ('sconosciuto (codice N)')")),
        ("name_en", _required(Unicode, "what it is, in English ('unknown (code N)')")),
        (
            "category",
            _required(
                Unicode,
                "valve, battery, tamper, clock, security, key, "
                "firmware, billing, metrology, power, device, communication, "
                "unknown",
            ),
        ),
        ("severity", _required(Unicode, "alarm (an operator acknowledges it), warning, info")),
        ("occurred", _required(DateTime, "when it happened, by the meter's clock")),
        ("received", _required(DateTime, "when the SAC received it")),
        ("source", _required(Unicode, "a push template or a poll")),
        ("counter", _optional(Integer64, "the meter's event counter, when it gives one")),
        ("id", _optional(Integer64, "the event's id: an alarm's, for AcknowledgeAlarm")),
        ("open", _optional(Boolean, "an alarm no operator has acknowledged yet")),
        ("acknowledged", _optional(DateTime, "when an operator acknowledged the alarm")),
        ("acknowledgedBy", _optional(Unicode, "who acknowledged it")),
        ("note", _optional(Unicode, "what they noted")),
    ]


class EventPage(_Type):
    _type_info = [
        ("events", _required(Array(EventInfo), "in the order they occurred")),
        ("cursor", _optional(Unicode, "pass back to resume after this page; absent: done")),
    ]


class AlarmPage(_Type):
    _type_info = [
        ("alarms", _required(Array(EventInfo), "the open alarms, newest first")),
        ("cursor", _optional(Unicode, "pass back for the next page; absent: the last")),
    ]


class ConnectionInfo(_Type):
    _type_info = [
        ("started", _required(DateTime, "when the meter connected (push) or was dialled (poll)")),
        ("peer", _required(Unicode, "where it came from, or the address dialled")),
        ("kind", _required(Unicode, "push or poll")),
        (
            "outcome",
            _required(
                Unicode,
                "stored, spooled, commands, done, partial, or why not (unknown-meter, "
                "ip-not-allowed, push-timeout, failed...)",
            ),
        ),
        ("durationMs", _required(Integer64, "connection to its end, milliseconds")),
        ("read", _optional(Array(Unicode), "the quantities read beyond the push frame")),
        ("skipped", _optional(Array(Unicode), "what could not be read, each with why")),
        ("detail", _optional(Unicode, "why it was refused or failed, or a note on its end")),
    ]


class ConnectionPage(_Type):
    _type_info = [
        ("connections", _required(Array(ConnectionInfo), "in the order they started")),
        ("cursor", _optional(Unicode, "pass back to resume after this page; absent: done")),
    ]


class ValveState(_Type):
    _type_info = [
        ("ldn", _required(Unicode, "the meter")),
        ("state", _optional(Integer, "0 closed, 1 open, 2 closed with opening enabled")),
        ("stateName", _required(Unicode, "the state's name")),
        ("at", _optional(DateTime, "when the meter last reported it")),
        ("pendingCommands", _required(Integer, "valve commands not finished yet")),
    ]


class TransitionInfo(_Type):
    _type_info = [
        ("at", _required(DateTime, "when")),
        ("state", _required(Unicode, "the state it moved to")),
        ("detail", _optional(Unicode, "who or what moved it, the meter's answer")),
    ]


class CommandStatus(_Type):
    _type_info = [
        ("id", _required(Integer64, "the command's id")),
        ("ldn", _required(Unicode, "the meter")),
        ("kind", _required(Unicode, "e.g. valve-close, valve-enable-opening")),
        ("state", _required(Unicode, "pending, sent, done, failed, expired or cancelled")),
        ("final", _required(Boolean, "true once the state will not change again")),
        ("requestedBy", _required(Unicode, "who asked for it")),
        ("created", _required(DateTime, "when it was asked for")),
        ("sent", _optional(DateTime, "when it was sent to the meter")),
        ("finished", _optional(DateTime, "when it ended")),
        ("attempts", _required(Integer, "sessions that tried it")),
        ("result", _optional(Unicode, "what the meter answered, or why it failed")),
        ("expires", _optional(DateTime, "its deadline: past it, it expires unrun")),
        (
            "parameters",
            _optional(Unicode, "its parameters as checked and stored, JSON (a secret hidden)"),
        ),
        ("history", _optional(Array(TransitionInfo), "every move, oldest first")),
    ]


# --- faults -------------------------------------------------------------------------------


class _Fault(Fault):
    __namespace__ = NS
    CODE = "Client"

    def __init__(self, message: str) -> None:
        super().__init__(faultcode=self.CODE, faultstring=message)


class AuthenticationFault(_Fault):
    """No valid credentials: HTTP Basic, WS-Security UsernameToken or a bearer token."""

    CODE = "Client.Authentication"


class BusyFault(_Fault):
    """The SAC is checking as many passwords as it may at once: try again in a moment."""

    CODE = "Server.Busy"


class ForbiddenFault(_Fault):
    """The user's role does not allow this operation."""

    CODE = "Client.Forbidden"


class UnknownMeterFault(_Fault):
    """No meter has this LDN."""

    CODE = "Client.UnknownMeter"


class UnknownCommandFault(_Fault):
    """No command has this id."""

    CODE = "Client.UnknownCommand"


class UnknownAlarmFault(_Fault):
    """No alarm has this id."""

    CODE = "Client.UnknownAlarm"


class AlreadyAcknowledgedFault(_Fault):
    """The alarm was acknowledged already (by whom and when: in the fault's string)."""

    CODE = "Client.AlreadyAcknowledged"


class BadRangeFault(_Fault):
    """A time without its UTC offset, or a range that ends before it starts."""

    CODE = "Client.BadRange"


class PageTooLargeFault(_Fault):
    """A page size outside the allowed bounds."""

    CODE = "Client.PageTooLarge"


class BadCursorFault(_Fault):
    """A cursor that is not one this query gave."""

    CODE = "Client.BadCursor"


class BadInputFault(_Fault):
    """Any other value that is not acceptable (an OBIS code, an action)."""

    CODE = "Client.BadInput"


class UnknownJobFault(_Fault):
    """No job has this id."""

    CODE = "Client.UnknownJob"


class JobStateFault(_Fault):
    """The job is not running (finished or cancelled already)."""

    CODE = "Client.JobState"


class UnknownMetersFault(_Fault):
    """Some of a job's LDNs are no meter's (the first 100 named, and how many): nothing is
    queued; ask to skip them to queue the others."""

    CODE = "Client.UnknownMeters"


class InvalidParameterFault(_Fault):
    """A command's kind or parameter refused: the message starts with the field at fault
    (``kind``, ``parameters.<field>``, ``parameters.typedValue.value[0]``...); nothing is
    queued."""

    CODE = "Client.InvalidParameter"


class CommandFinalFault(_Fault):
    """The command is no longer pending (sent to the meter, or finished): it cannot be
    cancelled; its state is in the message."""

    CODE = "Client.CommandFinal"


_FAULTS = {kind.CODE: kind for kind in _Fault.__subclasses__()}


def _fault(exc: Exception) -> Exception:
    """The fault of the error map (:data:`sac.web.errors.ERRORS`) for ``exc``; ``exc``
    itself when it is none of the caller's (a server error, an incident)."""
    found = soap_fault(exc)
    if found is None:
        return exc
    code, message = found
    return _FAULTS[code](message)


_COMMON = [AuthenticationFault, ForbiddenFault, BusyFault]
_PAGED = [*_COMMON, BadRangeFault, PageTooLargeFault, BadCursorFault]


# --- conversions --------------------------------------------------------------------------


def _quantity(value: Decimal | None, unit: int | None) -> Quantity | None:
    if value is None:
        return None
    return Quantity(value=value, unit=unit, unitName=display.unit_name(unit) or None)


def _meter_info(meter: Meter, bits: Any) -> MeterInfo:
    battery = None
    if meter.battery_value is not None:
        battery = _quantity(Decimal(meter.battery_value), meter.battery_unit)
    return MeterInfo(
        ldn=meter.ldn,
        pdr=meter.pdr,
        systemTitle=meter.system_title.hex().upper() if meter.system_title else None,
        profile=meter.profile,
        state=meter.state.value,
        created=meter.created,
        updated=meter.updated,
        lastConnection=meter.last_connection,
        index=_quantity(meter.index, meter.index_unit),
        indexCaptured=meter.index_captured,
        diagnostic=meter.diagnostic,
        diagnosticFlags=display.diagnostic_flags(meter.diagnostic, bits)
        if meter.diagnostic is not None
        else None,
        battery=battery,
        valveState=meter.valve_state,
        valveStateName=display.valve_name(meter.valve_state)
        if meter.valve_state is not None
        else None,
        valuesAt=meter.status_at,
    )


def _reading_info(reading: Reading, pdr: str | None = None) -> ReadingInfo:
    value = reading.scaled
    return ReadingInfo(
        ldn=reading.ldn,
        pdr=pdr,
        obis=str(reading.obis),
        attribute=reading.attribute,
        value=_quantity(value, reading.unit),
        raw=reading.raw.hex().upper() if value is None and reading.raw is not None else None,
        captured=reading.captured,
        received=reading.received,
        source=reading.source,
    )


def _gas_day_info(day: gasday.DailyConsumption, unit: int | None) -> GasDayInfo:
    start, end = gasday.bounds(day.day)
    return GasDayInfo(
        day=day.day,
        start=start,
        end=end,
        volume=_quantity(day.volume, unit),
        since=day.since,
        until=day.until,
    )


def _event_info(event: Event) -> EventInfo:
    kind = describe(event.code)
    ack = event.acknowledgement
    return EventInfo(
        ldn=event.ldn,
        logbook=str(event.logbook),
        code=event.code,
        name_it=kind.italian,
        name_en=kind.english,
        category=event.category or kind.category.value,
        severity=event.severity or kind.severity.value,
        occurred=event.occurred,
        received=event.received,
        source=event.source,
        counter=event.counter,
        id=event.id,
        open=event.open_alarm,
        acknowledged=ack.at if ack else None,
        acknowledgedBy=ack.by if ack else None,
        note=ack.note if ack else None,
    )


def _connection_info(c: Connection) -> ConnectionInfo:
    return ConnectionInfo(
        started=c.started,
        peer=c.peer,
        kind=c.kind,
        outcome=c.outcome,
        durationMs=c.duration_ms,
        read=list(c.read),
        skipped=list(c.skipped),
        detail=c.detail,
    )


def _command_status(
    command: Command, history: list[CommandTransition] | None = None
) -> CommandStatus:
    """A command as SOAP shows it (``history``: with its moves)."""
    return CommandStatus(
        id=command.id,
        ldn=command.ldn,
        kind=command.kind,
        state=command.state.value,
        final=command.state.value not in ("pending", "sent"),
        requestedBy=command.requested_by,
        created=command.created,
        sent=command.sent,
        finished=command.finished,
        attempts=command.attempts,
        result=command.result,
        expires=command.expires,
        parameters=json.dumps(shown_params(command), sort_keys=True),
        history=None
        if history is None
        else [TransitionInfo(at=h.at, state=h.state.value, detail=h.detail) for h in history],
    )


def _range(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if start is None or end is None:
        raise BadRangeFault("give both the start and the end of the range")
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRangeFault("give times with their UTC offset, e.g. 2026-11-21T06:00:00Z")
    if end <= start:
        raise BadRangeFault("the range ends before it starts")
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _span(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """A range as the audit trail shows it (as given: it may be refused)."""
    return "/".join(t.isoformat() if t is not None else "?" for t in (start, end))


def _limit(limit: int | None, default: int, most: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= most:
        raise PageTooLargeFault(f"a page holds 1 to {most} items, not {limit}")
    return limit
