"""The OpenAPI entries of the commands (:mod:`sac.web.api_commands`): their paths, the
schemas of what a client sends and gets (from the declared types), each kind's parameters,
and the typed JSON value (:mod:`sac.dlms.typedjson`); :func:`sac.web.openapi.openapi`
merges them in."""

from __future__ import annotations

from typing import Any

import msgspec

from sac.dlms.typedjson import TYPE_NAMES
from sac.services.commands import PROFILE_QUANTITIES, VALUE_TYPES
from sac.web.api_commands import STATES, CommandIn, CommandsOut
from sac.web.api_input import API
from sac.web.openapi import LDN_PARAM, LIMIT_PARAM, _answer, _op, _query, _ref

__all__ = ["PARAMS", "command_paths", "command_schemas"]

_TIME = {"type": "string", "format": "date-time", "description": "ISO-8601 with its offset"}
_INT = {"type": "integer"}
_TEXT = {"type": "string"}
_SETTING = {"type": "string", "description": "a key of the meter's profile's settings"}
_REF = {
    "class_id": {**_INT, "minimum": 1, "maximum": 65535},
    "obis": {"type": "string", "description": "logical name A.B.C.D.E.F"},
    "attribute": {**_INT, "minimum": 1, "maximum": 127},
}
# each kind's parameters: (its properties, the required ones)
PARAMS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "valve-close": ({"at": _TIME}, ()),
    "valve-enable-opening": ({"at": _TIME}, ()),
    "read-profile": (
        {"object": {"enum": list(PROFILE_QUANTITIES)}, "from": _TIME, "to": _TIME},
        ("object", "from", "to"),
    ),
    "read-attribute": (_REF, ("class_id", "obis", "attribute")),
    "set-attribute": (
        {
            **_REF,
            "value": {
                "description": "typed JSON (any value: structures and arrays), or a plain "
                "number, boolean or string with type",
                "anyOf": [_ref("TypedValue"), {"type": ["integer", "boolean", "string"]}],
            },
            "type": {"enum": list(VALUE_TYPES), "description": "only with a plain value"},
        },
        ("class_id", "obis", "attribute", "value"),
    ),
    "set-pdr": ({"pdr": {"type": "string", "pattern": "^[0-9]{14}$"}}, ("pdr",)),
    "sync-clock": ({}, ()),
    "set-setting": (
        {
            "setting": _SETTING,
            "value": {
                "description": "as the form writes it (text), or typed JSON of its shape",
                "anyOf": [_TEXT, _INT, _ref("TypedValue")],
            },
        },
        ("setting", "value"),
    ),
    "read-setting": ({"setting": _SETTING}, ("setting",)),
}


def _params_schema(kind: str) -> dict[str, Any]:
    properties, required = PARAMS[kind]
    return {
        "title": f"{kind} parameters",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
    }


def command_schemas() -> dict[str, Any]:
    """The schemas of a command's request, answers, parameters and typed JSON values."""
    _, components = msgspec.json.schema_components(
        [CommandIn, CommandsOut], ref_template="#/components/schemas/{name}"
    )
    out = dict(components)
    out["CommandIn"]["properties"]["params"] = {
        "$ref": "#/components/schemas/CommandParams",
        "description": "the kind's parameters; {} (the default) for none",
    }
    out["CommandParams"] = {
        "description": "by kind; a value out of bounds or of the wrong shape is refused (422) "
        "with its field, params.<field>, and nothing is queued",
        "anyOf": [_params_schema(kind) for kind in PARAMS],
    }
    out["TypedValue"] = {
        "type": "object",
        "description": "a COSEM value in typed JSON, as the public test vectors write it: "
        '{"type": "structure", "value": [{"type": "enum", "value": 0}, ...]}; integers in '
        "their type's range, octet-strings in hex, arrays of one type",
        "required": ["type", "value"],
        "additionalProperties": False,
        "properties": {"type": {"enum": list(TYPE_NAMES)}, "value": {}},
    }
    return out


def _id_param() -> dict[str, Any]:
    return {
        "name": "command_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
        "description": "the command's id",
    }


def _list_params(by_meter: bool) -> list[dict[str, Any]]:
    states = {"type": "array", "items": {"enum": STATES}}
    out = [
        _query("state", "only these states: repeated, or comma-separated", states),
        LIMIT_PARAM,
    ]
    if by_meter:
        return [LDN_PARAM, *out]
    return [_query("ldn", "only this meter's", {"type": "string"}), *out]


def command_paths() -> dict[str, Any]:
    """The commands' operations, by their full paths."""
    one = "the command, with its history"
    return {
        f"{API}/meters/{{ldn}}/commands": {
            "post": _op(
                "Queue a command of any kind for a meter (operators; audited); the meter's "
                "next session carries it out",
                {"201": _answer(one, "CommandOut")},
                errors=("400", "404", "413", "415", "422"),
                body="CommandIn",
                params=[LDN_PARAM],
            ),
            "get": _op(
                "A meter's commands, newest first",
                {"200": _answer("the commands (no history)", "CommandsOut")},
                errors=("400", "404"),
                params=_list_params(True),
            ),
        },
        f"{API}/commands": {
            "get": _op(
                "Commands of every meter or one, newest first",
                {"200": _answer("the commands (no history)", "CommandsOut")},
                errors=("400",),
                params=_list_params(False),
            )
        },
        f"{API}/commands/{{command_id}}": {
            "get": _op(
                "One command with its history",
                {"200": _answer(one, "CommandOut")},
                errors=("404",),
                params=[_id_param()],
            )
        },
        f"{API}/commands/{{command_id}}/cancel": {
            "post": _op(
                "Cancel a pending command (operators; audited); 409 names the state of one "
                "already sent or finished",
                {"200": _answer(one, "CommandOut")},
                errors=("404", "409"),
                params=[_id_param()],
            )
        },
    }
