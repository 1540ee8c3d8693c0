"""The OpenAPI 3.1 document of the JSON API, served at ``/api/v1/openapi.json``.

The schemas of what a client writes (a new meter, a change) come from the fields'
declarations (:func:`sac.web.schema.write_schemas`), the same that check what it sends;
the rest (the operations, the answers, the errors) is said here."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from sac.store.exports import MAX_PAGE
from sac.web.api_events import CATEGORIES
from sac.web.api_input import API, MAX_BODY, MAX_ITEMS
from sac.web.api_settings import settings_paths, settings_schemas
from sac.web.history import MAX_DAYS, QUANTITIES
from sac.web.openapi_parts import (
    AFTER_PARAM,
    BODY_ERRORS,
    DATE,
    LDN_PARAM,
    LIMIT_PARAM,
    STRING_OR_NULL,
    TIME,
    TIME_OR_NULL,
    UNIT,
)
from sac.web.openapi_parts import (
    answer as _answer,
)
from sac.web.openapi_parts import (
    error as _error,
)
from sac.web.openapi_parts import (
    query as _query,
)
from sac.web.openapi_parts import (
    ref as _ref,
)
from sac.web.openapi_parts import (
    time_param as _time_param,
)
from sac.web.schema import answer_schemas, event_schemas, read_schemas, write_schemas
from sac.web.schema_jobs import job_paths, job_schemas

__all__ = ["openapi"]


RESPONSES = {
    "BadRequest": _answer(
        "malformed JSON, a body of the wrong shape, or a bad query parameter", "Error"
    ),
    "Unauthorized": {
        **_answer("no token, not a Bearer token, or a token not valid", "Error"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": _answer("the token's user's role does not allow this", "Error"),
    "NotFound": _answer("no such meter (or alarm)", "Error"),
    "Conflict": _answer(
        "refused by what is stored (a system title taken, history, an alarm acknowledged already)",
        "Error",
    ),
    "TooLarge": _answer(f"a body over {MAX_BODY // 2**20} MiB", "Error"),
    "Unsupported": _answer("a body not sent as application/json", "Error"),
    "Invalid": _answer("items or fields refused, each listed; nothing is changed", "Error"),
}


def _schemas(profiles: list[str]) -> dict[str, Any]:
    """The schemas: a meter as read, what a client writes (from the fields' declarations),
    the bulk bodies, the answers and the error."""
    return {
        "Meter": {
            "type": "object",
            "required": [
                "ldn",
                "pdr",
                "system_title",
                "profile",
                "state",
                "address",
                "allowed_ips",
                "poll_interval_s",
                "created",
                "updated",
                "last_connection",
                "index",
                "diagnostic",
                "battery",
                "valve_state",
            ],
            "properties": {
                "ldn": {"type": "string"},
                "pdr": STRING_OR_NULL,
                "system_title": {**STRING_OR_NULL, "description": "16 hex digits, upper case"},
                "profile": {"type": "string"},
                "state": {"type": "string", "enum": ["active", "disabled"]},
                "address": STRING_OR_NULL,
                "allowed_ips": {"type": "array", "items": {"type": "string"}},
                "poll_interval_s": {"type": ["integer", "null"]},
                "created": TIME,
                "updated": TIME,
                "last_connection": TIME_OR_NULL,
                "values_at": {
                    **TIME_OR_NULL,
                    "description": "when the last values below were the meter's",
                },
                "index": {
                    "type": ["object", "null"],
                    "description": "the last converted-volume index (null: never read)",
                    "properties": {
                        "value": {
                            "type": "string",
                            "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
                            "description": "scaled, exact decimal as a string (never a float)",
                        },
                        "unit": UNIT,
                        "unit_code": {"type": ["integer", "null"], "description": "DLMS unit"},
                        "captured": TIME_OR_NULL,
                    },
                },
                "diagnostic": {
                    "type": ["object", "null"],
                    "properties": {
                        "value": {"type": "integer", "description": "the bitmask; 0: OK"},
                        "flags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "battery": {
                    "type": ["object", "null"],
                    "properties": {
                        "value": {"type": "integer"},
                        "unit": UNIT,
                        "unit_code": {"type": ["integer", "null"]},
                    },
                },
                "valve_state": {
                    "type": ["object", "null"],
                    "properties": {
                        "code": {"type": "integer", "description": "IC 70 control_state"},
                        "name": {"type": "string"},
                    },
                },
                "keys": {
                    "type": "object",
                    "description": "whether keys are set (never a key); in the answers about "
                    "one meter and of a bulk add, not in the list",
                    "properties": {"management": {"type": "string", "enum": ["set", "missing"]}},
                },
            },
        },
        **write_schemas(profiles),
        **read_schemas(),
        **event_schemas(),
        **answer_schemas(),
        **job_schemas(),
        **settings_schemas(),
        "NewMeters": {
            "type": "object",
            "required": ["meters"],
            "additionalProperties": False,
            "properties": {
                "meters": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": _ref("NewMeter"),
                }
            },
        },
        "MeterChanges": {
            "type": "object",
            "required": ["meters"],
            "additionalProperties": False,
            "properties": {
                "meters": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": _ref("MeterChange"),
                }
            },
        },
        "Deletion": {
            "type": "object",
            "required": ["ldns"],
            "additionalProperties": False,
            "properties": {
                "ldns": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": {"type": "string"},
                },
                "purge": {
                    "type": "boolean",
                    "default": False,
                    "description": "delete meters with readings or events, and them too",
                },
            },
        },
        "Deleted": {
            "type": "object",
            "properties": {"deleted": {"type": "integer"}, "purged": {"type": "boolean"}},
        },
        "Meters": {
            "type": "object",
            "properties": {"meters": {"type": "array", "items": _ref("Meter")}},
        },
        "MeterPage": {
            "type": "object",
            "required": ["meters", "next", "total"],
            "properties": {
                "meters": {"type": "array", "items": _ref("Meter")},
                "next": {
                    **STRING_OR_NULL,
                    "description": "the cursor of the next page (after=); null: the last",
                },
                "total": {"type": "integer", "description": "meters the filters keep"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {
                            "type": "string",
                            "description": "unauthorized, forbidden, not_found, conflict, "
                            "invalid, invalid_body, malformed_json, bad_parameter, "
                            "too_many_items, too_large, unsupported_media_type, "
                            "method_not_allowed, unavailable, internal",
                        },
                        "message": {"type": "string"},
                        "items": {
                            "type": "array",
                            "description": "each refusal: the item's position in the request "
                            "(null: the body of a one-meter request), its field (null: the "
                            "whole item)",
                            "items": {
                                "type": "object",
                                "required": ["index", "field", "message"],
                                "properties": {
                                    "index": {"type": ["integer", "null"]},
                                    "field": STRING_OR_NULL,
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
    }


def _op(
    summary: str,
    ok: dict[str, dict[str, Any]],
    *,
    errors: Iterable[str] = (),
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "responses": dict(ok)}
    if not public:
        out["responses"].update({"401": _error("Unauthorized"), "403": _error("Forbidden")})
    codes = {"400": "BadRequest", "404": "NotFound", "409": "Conflict", "413": "TooLarge"}
    codes |= {"415": "Unsupported", "422": "Invalid"}
    for code in errors:
        out["responses"][code] = _error(codes[code])
    if body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if params:
        out["parameters"] = params
    if public:
        out["security"] = []
    return out


def _paths() -> dict[str, Any]:
    """Every operation of the API, by its full path."""
    return {
        f"{API}/openapi.json": {
            "get": _op(
                "This document",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                public=True,
            )
        },
        f"{API}/meters": {
            "get": _op(
                "List meters, by LDN, in pages",
                {"200": _answer("a page of meters (no keys member)", "MeterPage")},
                errors=("400",),
                params=[
                    LIMIT_PARAM,
                    AFTER_PARAM,
                    _time_param("changed_since", "only meters added, changed or heard from since"),
                    _query(
                        "state",
                        "active or disabled",
                        {"type": "string", "enum": ["active", "disabled"]},
                    ),
                ],
            ),
            "post": _op(
                "Add meters, with their Management keys: all or none",
                {"201": _answer("the meters added, in the request's order", "Meters")},
                errors=BODY_ERRORS,
                body="NewMeters",
            ),
            "patch": _op(
                "Change meters (fields, state, keys): all or none",
                {"200": _answer("the meters as they are now (no keys member)", "Meters")},
                errors=BODY_ERRORS,
                body="MeterChanges",
            ),
        },
        f"{API}/meters/delete": {
            "post": _op(
                "Delete meters: all or none",
                {"200": _answer("how many were deleted", "Deleted")},
                errors=BODY_ERRORS,
                body="Deletion",
            )
        },
        f"{API}/meters/{{ldn}}": {
            "get": _op(
                "One meter",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[LDN_PARAM],
            ),
            "patch": _op(
                "Change one meter",
                {"200": _answer("the meter as it is now", "Meter")},
                errors=(*BODY_ERRORS, "404", "409"),
                body="MeterChangeOne",
                params=[LDN_PARAM],
            ),
            "delete": _op(
                "Delete one meter",
                {"204": {"description": "deleted"}},
                errors=("400", "404", "409"),
                params=[
                    LDN_PARAM,
                    {
                        "name": "purge",
                        "in": "query",
                        "schema": {"type": "boolean", "default": False},
                        "description": "also its readings and events; without it a meter "
                        "with history is refused (409)",
                    },
                ],
            ),
        },
        f"{API}/meters/{{ldn}}/readings": {
            "get": _op(
                "One object's readings of a meter, in capture order, in pages",
                {"200": _answer("a page of readings", "ObjectReadings")},
                errors=("400", "404"),
                params=[
                    LDN_PARAM,
                    _query(
                        "object", "the object", {"type": "string", "enum": list(QUANTITIES)}, True
                    ),
                    _query("from", "captured from (included; default: 30 days before to)", TIME),
                    _query("to", "captured before (default: now)", TIME),
                    _query(
                        "limit",
                        "readings a page",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1000},
                    ),
                    _query("after", "the cursor: next of the previous page", {"type": "string"}),
                ],
            )
        },
        f"{API}/meters/{{ldn}}/daily": {
            "get": _op(
                "Consumption per gas day (06:00 to 06:00 Europe/Rome); a gap is null",
                {"200": _answer("one row per gas day, both ends included", "DailyConsumption")},
                errors=("400", "404"),
                params=[
                    LDN_PARAM,
                    _query(
                        "from",
                        f"the first gas day (default: 30 before to); at most {MAX_DAYS}",
                        DATE,
                    ),
                    _query("to", "the last gas day (default: the last whole one)", DATE),
                ],
            )
        },
        f"{API}/exports/month-start": {
            "get": _op(
                "For billing: each meter's index at a gas month's start (06:00 Rome of the "
                "1st): the last captured in the gas day ending then, else null",
                {"200": _answer("a page of meters, by meter", "MonthStartExport")},
                errors=("400",),
                params=[
                    _query("year", "the gas month's year", {"type": "integer"}, True),
                    _query(
                        "month", "1 to 12", {"type": "integer", "minimum": 1, "maximum": 12}, True
                    ),
                    _query("pdrs", "only these PDRs, comma-separated", {"type": "string"}),
                    _query(
                        "limit",
                        "meters a page",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1000},
                    ),
                    _query("after", "the cursor: next of the previous page", {"type": "string"}),
                ],
            )
        },
        f"{API}/meters/{{ldn}}/connections": {
            "get": _op(
                "A meter's sessions (pushes, polls) in a time range, oldest first, in pages",
                {"200": _answer("a page of the meter's connections", "ConnectionsOut")},
                errors=("400", "404"),
                params=[
                    LDN_PARAM,
                    _time_param("from", "started at or after (default: 30 days before to)"),
                    _time_param("to", "started before (default: now)"),
                    AFTER_PARAM,
                    LIMIT_PARAM,
                ],
            )
        },
        f"{API}/meters/{{ldn}}/disable": {
            "post": _op(
                "Disable a meter (its pushes are refused)",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[LDN_PARAM],
            )
        },
        f"{API}/meters/{{ldn}}/enable": {
            "post": _op(
                "Enable a meter again",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[LDN_PARAM],
            )
        },
    }


CURSOR_PARAM = {
    "name": "cursor",
    "in": "query",
    "schema": {"type": "string"},
    "description": "the cursor of the previous page",
}


def _event_paths() -> dict[str, Any]:
    """A meter's events, the open alarms, an alarm acknowledged."""
    return {
        f"{API}/meters/{{ldn}}/events": {
            "get": _op(
                "A meter's events in [start, end), in the order they occurred, in pages",
                {"200": _answer("a page of events, in words", "EventsOut")},
                errors=("400", "404"),
                params=[
                    LDN_PARAM,
                    _time_param("start", "from (included); default: all"),
                    _time_param("end", "to (excluded); default: all"),
                    CURSOR_PARAM,
                    LIMIT_PARAM,
                ],
            )
        },
        f"{API}/alarms": {
            "get": _op(
                "The open alarms (not acknowledged), newest first, in pages",
                {"200": _answer("a page of open alarms", "EventsOut")},
                errors=("400", "404"),
                params=[
                    {
                        "name": "category",
                        "in": "query",
                        "schema": {"type": "string", "enum": sorted(CATEGORIES)},
                    },
                    {
                        "name": "ldn",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "only this meter's",
                    },
                    CURSOR_PARAM,
                    LIMIT_PARAM,
                ],
            )
        },
        f"{API}/alarms/{{alarm_id}}/acknowledge": {
            "post": {
                **_op(
                    "Acknowledge an open alarm, with a note (operators; audited)",
                    {"200": _answer("the alarm, acknowledged", "EventOut")},
                    errors=("400", "404", "409", "415", "422"),
                    params=[
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                            "description": "the alarm's id",
                        },
                    ],
                ),
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("AcknowledgeIn")}},
                },
            }
        },
    }


def openapi(profiles: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API's routes (:mod:`sac.web.api`)."""
    from sac.web.openapi_commands import command_paths, command_schemas  # (it uses this module)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SAC provisioning API",
            "version": "1",
            "description": "Meters of the SAC for provisioning systems. Bulk requests are "
            "all or nothing; every refused item is listed by its position. Keys are "
            "write-only. Every change is in the audit trail as "
            "'<user> (API token #<id> <name>)'.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            **_paths(),
            **_event_paths(),
            **job_paths(API, _op, _answer),
            **settings_paths(API),
            **command_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (admin page /admin/tokens or "
                    "sac-admin create-token); acts with its user's role",
                }
            },
            "schemas": {**_schemas(list(profiles)), **command_schemas()},
            "responses": copy.deepcopy(RESPONSES),
        },
    }
