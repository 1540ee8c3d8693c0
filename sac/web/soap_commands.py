"""The SOAP API's commands (:class:`sac.web.soap.ErpService` takes these operations in):
``RequestCommand`` (any kind, typed parameters), ``ListCommands`` (by meter and state,
newest first) and ``CancelCommand`` (a pending one).

A command's parameters are one complex type, :class:`CommandParameters`, with an optional
element for each parameter of any kind; the kind says which it takes (the table in its
documentation).  A value of a structure or an array goes in ``typedValue``, typed JSON as
text (:mod:`sac.dlms.typedjson`, the form of the public test vectors).  A refusal is the
fault ``Client.InvalidParameter``, its message starting with the element at fault
(``parameters.classId: ...``, ``parameters.typedValue.value[0]: ...``); nothing is queued.
"""

from __future__ import annotations

import json
from typing import Any

from spyne import Array, DateTime, Integer, Integer64, Unicode, rpc

from sac.services import commands as command_service
from sac.services.commands import CommandError, Kind
from sac.store import Actor, CommandState, Role, UnknownMeter
from sac.web.soap_call import Call
from sac.web.soap_types import (
    _COMMON,
    CommandFinalFault,
    CommandStatus,
    InvalidParameterFault,
    PageTooLargeFault,
    UnknownCommandFault,
    UnknownMeterFault,
    _command_status,
    _limit,
    _optional,
    _required,
    _Type,
)

__all__ = ["MAX_COMMANDS", "CancelCommand", "CommandParameters", "ListCommands", "RequestCommand"]

MAX_COMMANDS = 1000  # commands a ListCommands answer
KINDS = [k.value for k in Kind]


class CommandParameters(_Type):
    """A command's parameters, by kind: valve-close and valve-enable-opening: ``at``
    (optional: a scheduled-script valve's time); read-profile: ``object``, ``from``,
    ``to``; read-attribute: ``classId``, ``obis``, ``attribute``; set-attribute: those and
    ``typedValue`` (or ``value`` with ``valueType`` for a scalar); set-pdr: ``pdr``;
    sync-clock: none; set-setting: ``setting`` and ``value`` (its text, as the form writes
    it) or ``typedValue``; read-setting: ``setting``.  ``expires``: any command's deadline."""

    _type_info = [
        ("at", _optional(DateTime, "when the valve operates (scheduled-script valves)")),
        ("object", _optional(Unicode, "daily_profile, event_logbook or metrological_logbook")),
        ("from", _optional(DateTime, "a profile's range: from (included)")),
        ("to", _optional(DateTime, "a profile's range: to")),
        ("classId", _optional(Integer, "the COSEM interface class, 1 to 65535")),
        ("obis", _optional(Unicode, "the logical name, A.B.C.D.E.F")),
        ("attribute", _optional(Integer, "the attribute, 1 to 127 (2 to 127 to set)")),
        ("setting", _optional(Unicode, "a setting of the meter's profile, e.g. push_times")),
        ("value", _optional(Unicode, "a setting's value as text, or a scalar with valueType")),
        ("valueType", _optional(Unicode, "the A-XDR type of a scalar value (set-attribute)")),
        (
            "typedValue",
            _optional(
                Unicode,
                'any value as typed JSON text: {"type": "structure", "value": [{"type": '
                '"enum", "value": 0}, ...]}',
            ),
        ),
        ("pdr", _optional(Unicode, "a PDR: 14 digits")),
        ("expires", _optional(DateTime, "a deadline: past it the command expires unrun")),
    ]


class CommandList(_Type):
    _type_info = [("commands", _required(Array(CommandStatus), "newest first"))]


# the SOAP element of each parameter a command takes (the rest are named alike)
_ELEMENTS = {"class_id": "classId", "type": "valueType"}
_TIMES = ("at", "from", "to")


def _params(given: Any) -> dict[str, Any]:
    """The parameters of :func:`sac.services.commands.validate` from the SOAP element."""
    if given is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("object", "obis", "attribute", "setting", "value", "pdr"):
        if getattr(given, name, None) is not None:
            out[name] = getattr(given, name)
    for name in _TIMES:
        if getattr(given, name, None) is not None:
            out[name] = getattr(given, name).isoformat()
    if given.classId is not None:
        out["class_id"] = given.classId
    if given.valueType is not None:
        out["type"] = given.valueType
    if given.typedValue is not None:
        if "value" in out:
            raise InvalidParameterFault("parameters.typedValue: give value or typedValue")
        try:
            out["value"] = json.loads(given.typedValue)
        except ValueError as exc:
            raise InvalidParameterFault(f"parameters.typedValue: not JSON: {exc}") from None
    return out


def _field(exc: CommandError, given: Any) -> str:
    """The SOAP name of the field a CommandError names."""
    if exc.field == "kind":
        return "kind"
    if exc.field == "params":
        return "parameters"
    head, dot, rest = exc.field.partition(".")
    if head == "value" and given is not None and given.typedValue is not None:
        head = "typedValue"
    return f"parameters.{_ELEMENTS.get(head, head)}{dot}{rest}"


def _refused(exc: CommandError, given: Any) -> InvalidParameterFault:
    return InvalidParameterFault(f"{_field(exc, given)}: {str(exc).removeprefix(exc.field + ': ')}")


def _states(names: list[str] | None) -> list[CommandState] | None:
    try:
        return [CommandState(n) for n in names or ()] or None
    except ValueError:
        states = ", ".join(s.value for s in CommandState)
        raise InvalidParameterFault(f"state: one of {states}") from None


# the operations, each an ``@rpc`` function that ErpService (sac.web.soap) takes into its
# class body: spyne collects a service's operations from its class dict, and one service
# keeps one WSDL port and binding for every operation


@rpc(
    _required(Unicode, "the meter's LDN"),
    _required(Unicode(values=KINDS), "the command's kind"),
    CommandParameters.customize(min_occurs=0, doc="the kind's parameters"),
    _returns=CommandStatus,
    _throws=[*_COMMON, UnknownMeterFault, InvalidParameterFault],
)
async def RequestCommand(ctx: Any, ldn: str, kind: str, parameters: Any) -> CommandStatus:
    """Queue a command of any kind (operators): checked, then carried out at the meter's
    next session; follow it with GetCommandStatus.  A parameter out of bounds or of the
    wrong shape: Client.InvalidParameter naming it, nothing queued; an unknown meter:
    Client.UnknownMeter."""
    call = Call(ctx)

    async def work(actor: Actor) -> CommandStatus:
        params = _params(parameters)
        expires = parameters.expires if parameters is not None else None
        if expires is not None and (expires.tzinfo is None or expires <= call.web.now()):
            raise InvalidParameterFault("parameters.expires: a future time with its offset")
        meter = await call.web.store.meters.get(ldn)
        if meter is None:
            raise UnknownMeter(ldn)
        profile = call.web.registry.match(assigned=meter.profile)
        try:
            command = await command_service.queue(
                call.web.store, profile, ldn, kind, params, actor,
                now=call.web.now(), expires=expires,
            )  # fmt: skip
        except CommandError as exc:
            raise _refused(exc, parameters) from None
        return _command_status(command, await call.web.store.commands.history(command.id))

    return await call.run(Role.OPERATOR, ldn, kind, work)


@rpc(
    Unicode(doc="only this meter's (all when absent)"),
    Unicode(max_occurs="unbounded", doc="only these states (repeat the element)"),
    Integer(doc=f"at most this many, 1 to {MAX_COMMANDS} (100)"),
    _returns=CommandList,
    _throws=[*_COMMON, UnknownMeterFault, InvalidParameterFault, PageTooLargeFault],
)
async def ListCommands(ctx: Any, ldn: Any, state: Any, limit: Any) -> CommandList:
    """Commands, newest first: of one meter or all, in some states (pending, sent,
    done, failed, expired, cancelled) or any."""
    call = Call(ctx)

    async def work(actor: Actor) -> CommandList:
        states, size = _states(state), _limit(limit, 100, MAX_COMMANDS)
        if ldn and await call.web.store.meters.get(ldn) is None:
            raise UnknownMeter(ldn)
        found = await call.web.store.commands.recent(ldn or None, states, size)
        return CommandList(commands=[_command_status(c) for c in found])

    return await call.run(Role.VIEWER, ldn, ",".join(state or ()) or None, work)


@rpc(
    _required(Integer64, "the command's id"),
    _returns=CommandStatus,
    _throws=[*_COMMON, UnknownCommandFault, CommandFinalFault],
)
async def CancelCommand(ctx: Any, id: int) -> CommandStatus:
    """Cancel a pending command (operators).  One already sent to the meter or
    finished: Client.CommandFinal with its state; no such id: Client.UnknownCommand."""
    call = Call(ctx)

    async def work(actor: Actor) -> CommandStatus:
        command = await call.web.store.commands.cancel(id, actor)
        return _command_status(command, await call.web.store.commands.history(id))

    return await call.run(Role.OPERATOR, str(id), None, work)
