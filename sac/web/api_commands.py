"""The JSON API's commands (:mod:`sac.web.api` routes them here): any kind queued for a meter
with its typed parameters, the commands listed by meter and state, one read with its
history, a pending one cancelled.

A command's parameters are checked by :func:`sac.services.commands.validate` before
anything is queued; a refusal is a 422 naming the field (``kind``, ``params`` or
``params.<field>``, e.g. ``params.value.value[0]`` inside a typed JSON value).  Values of
structures and arrays are typed JSON (:mod:`sac.dlms.typedjson`, the form of the public test
vectors).  Answers are built from the types declared here, the same the OpenAPI document
shows (:mod:`sac.web.openapi_commands`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import msgspec

from sac.errors import CommandStateError
from sac.services import commands as command_service
from sac.services.commands import CommandError, Kind
from sac.store import ApiToken, Command, CommandState, CommandTransition, UnknownMeter
from sac.web.api_input import invalid, problem, query_limit, read_object, read_query
from sac.web.errors import ApiError, json_answer

__all__ = [
    "CommandIn",
    "CommandOut",
    "CommandsOut",
    "cancel",
    "command_answer",
    "listed",
    "one",
    "queued",
    "shown_params",
]

KINDS = [k.value for k in Kind]
STATES = [s.value for s in CommandState]
HIDDEN = "(hidden)"  # what a secret setting's value is shown as (a PIN)

_Time = Annotated[str, msgspec.Meta(description="UTC, ISO-8601 with offset")]


class CommandIn(msgspec.Struct, forbid_unknown_fields=True):
    """A command to queue: its kind, its parameters (by kind) and an optional deadline."""

    kind: Annotated[str, msgspec.Meta(extra_json_schema={"enum": KINDS})]
    params: Annotated[
        dict[str, Any],
        msgspec.Meta(description="the kind's parameters (see CommandParams); {} for none"),
    ] = msgspec.field(default_factory=dict)
    expires: (
        Annotated[str, msgspec.Meta(description="a deadline, ISO-8601 with offset; past it the "
                                    "command expires unrun")]
        | None
    ) = None  # fmt: skip


class TransitionOut(msgspec.Struct):
    """One move of a command, with its time and what it says."""

    at: _Time
    state: Annotated[str, msgspec.Meta(extra_json_schema={"enum": STATES})]
    detail: str | None


class CommandOut(msgspec.Struct, kw_only=True):
    """A command and where it stands."""

    id: int
    ldn: str
    kind: Annotated[str, msgspec.Meta(extra_json_schema={"enum": KINDS})]
    params: Annotated[
        dict[str, Any],
        msgspec.Meta(description="as checked and stored (typed JSON values; a secret hidden)"),
    ]
    state: Annotated[
        str,
        msgspec.Meta(
            description="pending, sent (claimed by the meter's session), then done, failed, "
            "expired or cancelled",
            extra_json_schema={"enum": STATES},
        ),
    ]
    final: Annotated[bool, msgspec.Meta(description="the state will not change again")]
    result: Annotated[str | None, msgspec.Meta(description="the meter's answer, or why not")]
    created: _Time
    sent: _Time | None
    finished: _Time | None
    expires: _Time | None
    attempts: Annotated[int, msgspec.Meta(description="sessions that tried it")]
    requested_by: str
    history: (
        Annotated[
            list[TransitionOut],
            msgspec.Meta(description="every move, oldest first (one command's answers only)"),
        ]
        | None
    ) = None


class CommandsOut(msgspec.Struct):
    """Commands, newest first."""

    commands: list[CommandOut]


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def shown_params(command: Command) -> dict[str, Any]:
    """A command's parameters as an answer shows them: a secret setting's value hidden."""
    params = dict(command.params)
    if command.kind == Kind.SET_SETTING and params.get("text") == HIDDEN:
        params["value"] = HIDDEN
    return params


def command_out(command: Command, history: list[CommandTransition] | None = None) -> CommandOut:
    return CommandOut(
        id=command.id,
        ldn=command.ldn,
        kind=command.kind,
        params=shown_params(command),
        state=command.state.value,
        final=command.state.final,
        result=command.result,
        created=_iso(command.created) or "",
        sent=_iso(command.sent),
        finished=_iso(command.finished),
        expires=_iso(command.expires),
        attempts=command.attempts,
        requested_by=command.requested_by,
        history=None
        if history is None
        else [TransitionOut(_iso(h.at) or "", h.state.value, h.detail) for h in history],
    )


def command_answer(
    command: Command, history: list[CommandTransition] | None = None
) -> dict[str, Any]:
    """One command as JSON (``history``: with its moves)."""
    out: dict[str, Any] = msgspec.to_builtins(command_out(command, history))
    if history is None:
        del out["history"]
    return out


def field_of(exc: CommandError) -> str:
    """The API's name of the field a CommandError names: ``kind``, ``params`` or
    ``params.<field>``."""
    return exc.field if exc.field in ("kind", "params") else f"params.{exc.field}"


def _refusal(field: str, message: str) -> ApiError:
    return invalid([problem(None, field, f"{field}: {message}")], "fields")


def _body(request: Any) -> CommandIn:
    """The body of a queue request, of the declared type (422 naming the field)."""
    body = read_object(request, CommandIn.__struct_fields__)
    try:
        return msgspec.convert(body, CommandIn)
    except msgspec.ValidationError as exc:
        found = re.search(r"`\$\.(\w+)`|field `(\w+)`", str(exc))
        field = next((g for g in found.groups() if g), None) if found else None
        raise _refusal(field or "body", str(exc)) from None


def _expires(text: str | None, now: dt.datetime) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise _refusal("expires", "an ISO-8601 time with its offset, e.g. 2026-12-01T06:00:00Z")
    if value <= now:
        raise _refusal("expires", "the deadline is past")
    return value


async def queued(api: Any, request: Any, token: ApiToken, ldn: str) -> bytes:
    """``POST /meters/{ldn}/commands`` ``{kind, params, expires?}``: the command, queued
    (201); 422 naming the field at fault, nothing queued; 404 for an unknown meter."""
    body = _body(request)
    now = api.web.now()
    expires = _expires(body.expires, now)
    meter = await api.store.meters.get(ldn)
    if meter is None:
        raise UnknownMeter(ldn)
    profile = api.registry.match(assigned=meter.profile)
    by = api._api_actor(request, token)
    try:
        command = await command_service.queue(
            api.store, profile, ldn, body.kind, body.params, by, now=now, expires=expires
        )
    except CommandError as exc:
        raise _refusal(field_of(exc), str(exc).removeprefix(f"{exc.field}: ")) from None
    history = await api.store.commands.history(command.id)
    return json_answer(request, 201, command_answer(command, history))


def _states(text: str | None) -> list[CommandState] | None:
    """The ``state`` parameter (repeated, or a comma list); None when absent."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    try:
        return [CommandState(name) for name in names] or None
    except ValueError:
        raise ApiError(
            400, "bad_parameter", f"state is one or more of {', '.join(STATES)}"
        ) from None


async def listed(api: Any, request: Any, ldn: str | None = None) -> bytes:
    """``GET /commands?ldn=&state=&limit=`` and ``GET /meters/{ldn}/commands?state=&limit=``:
    commands, newest first (404 for a meter named in the path that does not exist)."""
    allowed = ("state", "limit") if ldn is not None else ("ldn", "state", "limit")
    query = read_query(request, allowed, repeatable=("state",))
    states, limit = _states(query.get("state")), query_limit(query)
    if ldn is not None and await api.store.meters.get(ldn) is None:
        raise UnknownMeter(ldn)
    found = await api.store.commands.recent(ldn or query.get("ldn") or None, states, limit)
    answer = CommandsOut([command_out(c) for c in found])
    body = msgspec.to_builtins(answer)
    for item in body["commands"]:
        del item["history"]
    return json_answer(request, 200, body)


async def one(api: Any, request: Any, command_id: int) -> bytes:
    """``GET /commands/{id}``: the command with its history (404 if none)."""
    command = await api.store.commands.get(command_id)
    history = await api.store.commands.history(command_id)
    return json_answer(request, 200, command_answer(command, history))


async def cancel(api: Any, request: Any, token: ApiToken, command_id: int) -> bytes:
    """``POST /commands/{id}/cancel``: a pending command cancelled (audited); 409 naming
    its state once it is sent or final; 404 if none."""
    try:
        command = await api.store.commands.cancel(command_id, api._api_actor(request, token))
    except CommandStateError:
        now = await api.store.commands.get(command_id)
        raise ApiError(
            409,
            "conflict",
            f"command {command_id} is {now.state.value}: only a pending command is cancelled",
        ) from None
    history = await api.store.commands.history(command_id)
    return json_answer(request, 200, command_answer(command, history))
