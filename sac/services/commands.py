"""The commands an operator (or the ERP) queues for a meter: their kinds, their typed
parameters checked when queued, and how a session carries each one out.

A command is queued ``pending``; the session that has its meter on line claims it
(``sent``), runs it and finishes it ``done`` or ``failed`` with the meter's answer, or puts
it back in the queue when the session ends first.  A valve command is done only when the
valve state read back confirms it.  With an activation time in the future (the
scheduled-script valve) the session programs the meter and the command goes back to the
queue marked "programmed": a session after that time confirms it by reading the valve.

Each kind has its entry in two tables: ``VALIDATORS`` (its parameters, checked when queued)
and ``HANDLERS`` (how it runs, over a :class:`CommandContext`: what a command needs of the
session, which :class:`~sac.services.session.MeterSession` provides).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sac.dlms import Obis, selective
from sac.dlms.axdr import (
    DoubleLongUnsigned,
    Enum,
    Integer,
    Long,
    LongUnsigned,
    OctetString,
    Unsigned,
    VisibleString,
    encode_data,
)
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.typedjson import TypedJsonError, from_json, to_json
from sac.dlms.xdlms import SelectiveAccess
from sac.errors import SacError
from sac.profiles import CosemRef, IMeterProfile, ValveAction, ValveMethod, valve_steps
from sac.profiles.settings import Setting, SettingError, setting_of, setting_ref
from sac.protocols.interface import AccessError
from sac.services.readings import CLOCK, ROME, UNIX_TIME, Capture, text_of
from sac.store.model import Actor, Command, Ingest, MeterStatus, Reading

if TYPE_CHECKING:
    from sac.store.commands import ICommands

__all__ = [
    "HANDLERS",
    "PROGRAMMED",
    "CommandContext",
    "CommandError",
    "CommandStore",
    "Kind",
    "Outcome",
    "execute",
    "queue",
    "validate",
]

PROGRAMMED = "programmed for "  # the result of a valve command waiting for its time


class Kind(StrEnum):
    VALVE_CLOSE = "valve-close"
    VALVE_ENABLE_OPENING = "valve-enable-opening"
    READ_PROFILE = "read-profile"
    READ_ATTRIBUTE = "read-attribute"
    SET_ATTRIBUTE = "set-attribute"
    SET_PDR = "set-pdr"
    SYNC_CLOCK = "sync-clock"
    SET_SETTING = "set-setting"  # one of the profile's settings (sac.profiles.settings)
    READ_SETTING = "read-setting"


# the valve first: arrears closures have an SLA (docs/uni-ts-11291.md §5)
PRIORITY = {
    Kind.VALVE_CLOSE: 20,
    Kind.VALVE_ENABLE_OPENING: 20,
    Kind.SYNC_CLOCK: 10,
    Kind.SET_PDR: 10,
    Kind.SET_ATTRIBUTE: 10,
    Kind.SET_SETTING: 10,
    Kind.READ_SETTING: 0,
    Kind.READ_ATTRIBUTE: 0,
    Kind.READ_PROFILE: 0,
}
# control_state values that confirm a valve command (IC 70: 0 closed, 1 open, 2 ready)
CONFIRMS = {ValveAction.CLOSE: (0,), ValveAction.ENABLE_OPENING: (2, 1)}
PROFILE_QUANTITIES = ("daily_profile", "event_logbook", "metrological_logbook")
# the A-XDR types a set-attribute value may take, by name
VALUE_TYPES: dict[str, Any] = {
    "boolean": bool,
    "integer": Integer,
    "long": Long,
    "unsigned": Unsigned,
    "long-unsigned": LongUnsigned,
    "double-long-unsigned": DoubleLongUnsigned,
    "enum": Enum,
    "visible-string": VisibleString,
    "octet-string": lambda v: OctetString(bytes.fromhex(v)),
}
LATE_CONFIRMATION = dt.timedelta(hours=1)  # after its time, how long a programmed valve waits


class CommandError(SacError, ValueError):
    """Bad command parameters: ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a command ended in a session: ``ok`` True (done), False (failed), None (back in
    the queue); ``result`` for people; ``ingest``: what it read, to store."""

    ok: bool | None
    result: str
    ingest: Ingest = field(default_factory=Ingest)
    # fields of the meter's record the meter confirmed (a PDR read back): the store follows
    meter: Mapping[str, Any] = field(default_factory=dict)


# --- parameters -------------------------------------------------------------------------------


def _time(params: Mapping[str, Any], name: str, required: bool) -> dt.datetime | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise CommandError(name, "is required")
        return None
    try:
        value = dt.datetime.fromisoformat(str(raw))
    except ValueError:
        raise CommandError(name, f"{raw!r} is not an ISO-8601 date-time") from None
    if value.tzinfo is None:
        raise CommandError(name, "needs a UTC offset (e.g. +01:00 or Z)")
    return value


def _int(params: Mapping[str, Any], name: str, low: int, high: int) -> int:
    raw = params.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise CommandError(name, f"must be an integer in {low}..{high}")
    return raw


def _obis(params: Mapping[str, Any], name: str = "obis") -> str:
    try:
        return str(Obis(str(params.get(name, ""))))
    except (ValueError, SacError):
        raise CommandError(
            name, f"{params.get(name)!r} is not a logical name (A.B.C.D.E.F)"
        ) from None


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise CommandError(extra[0], "is not a parameter of this command")


def validate(
    kind: str, params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    """The parameters of a ``kind`` command for a meter of ``profile``, checked and in their
    stored form; CommandError names the first field at fault."""
    try:
        k = Kind(kind)
    except ValueError:
        raise CommandError("kind", f"{kind!r} is not one of {', '.join(Kind)}") from None
    if not isinstance(params, Mapping):
        raise CommandError("params", "must be an object")
    return VALIDATORS[k](params, profile, now)


def _valve_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"at"})
    at = _time(params, "at", required=False)
    if at is None:
        return {}
    if profile.valve_method is not ValveMethod.SCHEDULED_SCRIPT:
        raise CommandError("at", f"meters of profile {profile.name} operate the valve at once")
    if at < now - dt.timedelta(minutes=5):
        raise CommandError("at", "is in the past")
    return {"at": at.isoformat()}


def _read_profile_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"object", "from", "to"})
    obj = params.get("object")
    if obj not in PROFILE_QUANTITIES:
        raise CommandError("object", f"must be one of {', '.join(PROFILE_QUANTITIES)}")
    start = _time(params, "from", required=True)
    end = _time(params, "to", required=True)
    assert start is not None and end is not None
    if end <= start:
        raise CommandError("to", "must be after 'from'")
    if end - start > dt.timedelta(days=3660):
        raise CommandError("to", "a range is at most ten years")
    return {"object": obj, "from": start.isoformat(), "to": end.isoformat()}


def _read_attribute_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"class_id", "obis", "attribute"})
    return {
        "class_id": _int(params, "class_id", 1, 0xFFFF),
        "obis": _obis(params),
        "attribute": _int(params, "attribute", 1, 127),
    }


def _set_attribute_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"class_id", "obis", "attribute", "type", "value"})
    out = {
        "class_id": _int(params, "class_id", 1, 0xFFFF),
        "obis": _obis(params),
        "attribute": _int(params, "attribute", 2, 127),
        "type": params.get("type"),
        "value": params.get("value"),
    }
    if isinstance(out["value"], dict):  # typed JSON: any value, structures and arrays too
        if "type" in params:
            raise CommandError("type", "is not given with a typed JSON value (it has its type)")
        try:
            out["value"] = to_json(from_json(out["value"]))
        except TypedJsonError as exc:
            raise CommandError(exc.path, exc.reason) from None
        del out["type"]
        return out
    if out["type"] not in VALUE_TYPES:
        raise CommandError("type", f"must be one of {', '.join(VALUE_TYPES)}")
    try:
        _typed(out)
    except (ValueError, TypeError, SacError) as exc:
        raise CommandError("value", f"is not a valid {out['type']}: {exc}") from None
    return out


def _set_pdr_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"pdr"})
    pdr = params.get("pdr")
    if not isinstance(pdr, str) or not pdr.isdigit() or len(pdr) != 14:
        raise CommandError("pdr", "a PDR is 14 digits")
    return {"pdr": pdr}


def _setting(params: Mapping[str, Any], profile: IMeterProfile) -> Setting:
    key = params.get("setting")
    found = setting_of(profile, key) if isinstance(key, str) else None
    if found is None:
        keys = ", ".join(s.key for s in profile.settings)
        raise CommandError("setting", f"{key!r} is not a setting of {profile.name} ({keys})")
    return found


def _set_setting_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"setting", "value"})
    setting = _setting(params, profile)
    if setting.command != Kind.SET_SETTING:
        raise CommandError("setting", f"{setting.key} is set by the {setting.command} command")
    if "value" not in params:
        raise CommandError("value", "is required")
    try:
        value, text = setting.value_of(params["value"], profile)
    except SettingError as exc:
        raise CommandError("value", str(exc)) from None
    shown = "(hidden)" if setting.secret else text
    return {"setting": setting.key, "value": to_json(value), "text": shown}


def _read_setting_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, {"setting"})
    setting = _setting(params, profile)
    if setting.secret:
        raise CommandError("setting", f"{setting.key} is not read back (it is secret)")
    return {"setting": setting.key}


def _no_params(
    params: Mapping[str, Any], profile: IMeterProfile, now: dt.datetime
) -> dict[str, Any]:
    _only(params, set())
    return {}


Validator = Callable[[Mapping[str, Any], IMeterProfile, dt.datetime], dict[str, Any]]
# how each kind of command's parameters are checked when it is queued
VALIDATORS: dict[Kind, Validator] = {
    Kind.VALVE_CLOSE: _valve_params,
    Kind.VALVE_ENABLE_OPENING: _valve_params,
    Kind.READ_PROFILE: _read_profile_params,
    Kind.READ_ATTRIBUTE: _read_attribute_params,
    Kind.SET_ATTRIBUTE: _set_attribute_params,
    Kind.SET_PDR: _set_pdr_params,
    Kind.SYNC_CLOCK: _no_params,
    Kind.SET_SETTING: _set_setting_params,
    Kind.READ_SETTING: _read_setting_params,
}


def _typed(params: Mapping[str, Any]) -> Any:
    value = params["value"]
    kind = params["type"]
    if kind == "boolean" and not isinstance(value, bool):
        raise TypeError("true or false")
    if kind in ("visible-string", "octet-string") and not isinstance(value, str):
        raise TypeError("a string")
    if kind not in ("boolean", "visible-string", "octet-string") and (
        isinstance(value, bool) or not isinstance(value, int)
    ):
        raise TypeError("an integer")
    return VALUE_TYPES[kind](value)


class CommandStore(Protocol):
    """The part of the store the queue's users reach: its commands (a
    :class:`~sac.store.connector.Store` is one)."""

    @property
    def commands(self) -> ICommands: ...


async def queue(
    store: CommandStore,
    profile: IMeterProfile,
    ldn: str,
    kind: str,
    params: Mapping[str, Any],
    by: Actor,
    *,
    now: dt.datetime,
    expires: dt.datetime | None = None,
) -> Command:
    """Check a command's parameters and queue it with its kind's priority; its audit line
    names the setting and the value's text (a secret's is "(hidden)")."""
    checked = validate(kind, params, profile, now)
    said = " = ".join(str(checked[k]) for k in ("setting", "text") if k in checked) or None
    rank = PRIORITY[Kind(kind)]
    return await store.commands.queue(ldn, kind, checked, by, expires, rank, said)


# --- running them -----------------------------------------------------------------------------


class CommandContext(Protocol):
    """What a command needs of the session that carries it out (a
    :class:`~sac.services.session.MeterSession` is one): its meter's profile, the clock,
    requests over the Management association, and the values to store."""

    @property
    def profile(self) -> IMeterProfile: ...

    def now(self) -> dt.datetime: ...

    async def get(self, ref: CosemRef, access: SelectiveAccess | None = None) -> Any: ...

    async def set(self, ref: CosemRef, value: Any) -> None: ...

    async def action(self, ref: CosemRef, method: int, parameters: Any) -> Any: ...

    def reading(self, ref: CosemRef, value: Any) -> Reading: ...

    def status(self, **values: Any) -> MeterStatus: ...

    async def read_profile(self, quantity: str, start: dt.datetime, end: dt.datetime) -> Ingest: ...


Handler = Callable[[CommandContext, Command], Awaitable[Outcome]]


async def execute(session: CommandContext, command: Command) -> Outcome:
    """Carry ``command`` out over the session's Management association.  Errors of the meter
    (a refused request, an exception-response) become a failed Outcome; a lost connection
    or a timeout propagates (the session puts the command back in the queue)."""
    return await HANDLERS[Kind(command.kind)](session, command)


def _ref(params: Mapping[str, Any]) -> CosemRef:
    return CosemRef(params["class_id"], Obis(params["obis"]), params["attribute"])


async def _read_attribute(session: CommandContext, command: Command) -> Outcome:
    ref = _ref(command.params)
    value = await session.get(ref)
    reading = session.reading(ref, value)
    return Outcome(True, text_of(value), Ingest(readings=[reading]))


async def _read_profile(session: CommandContext, command: Command) -> Outcome:
    params = command.params
    start = dt.datetime.fromisoformat(params["from"])
    end = dt.datetime.fromisoformat(params["to"])
    batch = await session.read_profile(params["object"], start, end)
    found = len(batch.readings) + len(batch.events)
    return Outcome(True, f"{found} values read", batch)


async def _set_attribute(session: CommandContext, command: Command) -> Outcome:
    params = command.params
    value = _typed(params) if "type" in params else from_json(params["value"])
    await session.set(_ref(params), value)
    return Outcome(True, "set")


async def _set_pdr(session: CommandContext, command: Command) -> Outcome:
    pdr = command.params["pdr"]
    setting = setting_of(session.profile, "pdr")
    if setting is None:  # a profile without the PDR setting: set it, unconfirmed
        await session.set(session.profile.objects["pdr"], VisibleString(pdr))
        return Outcome(True, f"PDR set to {pdr}")
    return await _write(session, setting, VisibleString(pdr), pdr)


async def _set_setting(session: CommandContext, command: Command) -> Outcome:
    setting = _known_setting(session, command)
    return await _write(
        session, setting, from_json(command.params["value"]), command.params["text"]
    )


async def _read_setting(session: CommandContext, command: Command) -> Outcome:
    setting = _known_setting(session, command)
    ref = setting_ref(session.profile, setting)
    value = await session.get(ref)
    return Outcome(
        True,
        f"{setting.label}: {_shown(setting, value, session)}",
        Ingest(readings=[session.reading(ref, value)]),
    )


def _known_setting(session: CommandContext, command: Command) -> Setting:
    setting = setting_of(session.profile, command.params["setting"])
    if setting is None:  # the meter's profile changed since the command was queued
        raise CommandError("setting", f"{command.params['setting']!r} is not a setting now")
    return setting


def _shown(setting: Setting, value: Any, session: CommandContext) -> str:
    try:
        return setting.show(value, session.profile)
    except SettingError as exc:
        return f"{text_of(value)} ({exc})"


async def _write(session: CommandContext, setting: Setting, value: Any, text: str) -> Outcome:
    """SET a setting, then (``read_back``) GET it in the same session: done when the meter
    gives back what was sent, failed with both values when it does not."""
    ref = setting_ref(session.profile, setting)
    await session.set(ref, value)
    if not setting.read_back:
        return Outcome(True, f"{setting.label} set to {text} (not read back)")
    try:
        back = await session.get(ref)
    except AccessError as exc:
        return Outcome(False, f"{setting.label} set, but reading it back was refused: {exc}")
    ingest = Ingest(readings=[session.reading(ref, back)])
    if encode_data(back) == encode_data(value):
        confirmed = {"pdr": text} if setting.key == "pdr" else {}
        words = f"{setting.label} set to {text}, confirmed by reading it back"
        return Outcome(True, words, ingest, confirmed)
    shown = _shown(setting, back, session)
    return Outcome(False, f"{setting.label}: sent {text}, the meter reads back {shown}", ingest)


CLOCK_TOLERANCE = dt.timedelta(seconds=2)  # a clock read back this close is synchronised


async def _sync_clock(session: CommandContext, command: Command) -> Outcome:
    """The meter's clock to the SAC's, in Italian time, read back: done when it is within
    CLOCK_TOLERANCE of the SAC's clock (deviation and its sign included)."""
    inverted = bool(session.profile.inverted_deviation)
    local = session.now().astimezone(ROME)
    raw = CosemDateTime.from_datetime(local, inverted_deviation=inverted).to_bytes()
    ref = session.profile.objects["clock"]
    await session.set(ref, OctetString(raw))
    sent = f"clock set to {local.isoformat(timespec='seconds')}"
    try:
        back = await session.get(ref)
        theirs = CosemDateTime.from_bytes(bytes(back)).to_datetime(inverted_deviation=inverted)
    except AccessError as exc:
        return Outcome(False, f"{sent}, but reading it back was refused: {exc}")
    except (SacError, TypeError, ValueError) as exc:
        return Outcome(False, f"{sent}, but the clock read back is not a time: {exc}")
    ingest = Ingest(readings=[session.reading(ref, back)])
    if theirs.tzinfo is None:
        return Outcome(False, f"{sent}; the meter reads back {theirs} without a deviation", ingest)
    drift = (theirs - session.now()).total_seconds()
    words = f"{sent}; the meter reads back {theirs.isoformat(timespec='seconds')} ({drift:+.1f} s)"
    return Outcome(abs(drift) <= CLOCK_TOLERANCE.total_seconds(), words, ingest)


async def _valve_close(session: CommandContext, command: Command) -> Outcome:
    return await _valve(session, command, ValveAction.CLOSE)


async def _valve_enable_opening(session: CommandContext, command: Command) -> Outcome:
    return await _valve(session, command, ValveAction.ENABLE_OPENING)


async def _valve(session: CommandContext, command: Command, action: ValveAction) -> Outcome:
    profile = session.profile
    valve = profile.objects["valve"].at(3)  # control_state
    at = dt.datetime.fromisoformat(command.params["at"]) if "at" in command.params else None
    now = session.now()
    if at is not None and at > now:
        if command.result and command.result.startswith(PROGRAMMED):
            return Outcome(None, command.result)  # programmed, its time has not come
        for step in valve_steps(profile, action, at):
            await _step(session, step)
        return Outcome(None, f"{PROGRAMMED}{at.isoformat()}")
    if not (command.result and command.result.startswith(PROGRAMMED)):
        for step in valve_steps(profile, action):
            await _step(session, step)
    state = await session.get(valve)
    reading, code = session.reading(valve, state), int(state)
    if code in CONFIRMS[action]:
        return Outcome(
            True,
            f"valve control_state {code} confirms {action.value}",
            _valve_ingest(session, reading, code),
        )
    if at is not None and now < at + LATE_CONFIRMATION:
        return Outcome(None, command.result or f"{PROGRAMMED}{at.isoformat()}")
    return Outcome(
        False,
        f"valve control_state {code} after {action.value}: not confirmed",
        _valve_ingest(session, reading, code),
    )


def _valve_ingest(session: CommandContext, reading: Reading, state: int) -> Ingest:
    return Ingest(readings=[reading], statuses=[session.status(valve_state=state)])


async def _step(session: CommandContext, step: Any) -> None:
    if step.method is not None:
        await session.action(step.target, step.method, step.value)
    else:
        await session.set(step.target, step.value)


# how a session carries out each kind of command
HANDLERS: dict[Kind, Handler] = {
    Kind.VALVE_CLOSE: _valve_close,
    Kind.VALVE_ENABLE_OPENING: _valve_enable_opening,
    Kind.READ_PROFILE: _read_profile,
    Kind.READ_ATTRIBUTE: _read_attribute,
    Kind.SET_ATTRIBUTE: _set_attribute,
    Kind.SET_PDR: _set_pdr,
    Kind.SYNC_CLOCK: _sync_clock,
    Kind.SET_SETTING: _set_setting,
    Kind.READ_SETTING: _read_setting,
}


def range_access(
    columns: tuple[Capture, ...], start: dt.datetime, end: dt.datetime, *, inverted: bool
) -> SelectiveAccess:
    """Selective access by range (selector 1) on a profile's time column: UNIX seconds or
    the clock's date-time, as the profile captures it (docs/uni-ts-11291.md §6, item 8)."""
    time_col = next((c for c in columns if c.obis in (UNIX_TIME, CLOCK)), None)
    if time_col is None:
        raise CommandError("object", "the profile has no time column to select a range on")
    return selective.by_range(
        (time_col.class_id, time_col.obis, time_col.attribute),
        start,
        end,
        date_time=time_col.obis != UNIX_TIME,
        zone=ROME,
        inverted_deviation=inverted,
    )
