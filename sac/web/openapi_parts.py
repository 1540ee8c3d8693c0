"""The building blocks of the JSON API's OpenAPI document (:mod:`sac.web.openapi`): a schema
reference, an answer, an error, the parameters and values that recur."""

from __future__ import annotations

from typing import Any

from sac.web.api_input import DEFAULT_LIMIT, MAX_LIMIT

__all__ = [
    "AFTER_PARAM",
    "BODY_ERRORS",
    "DATE",
    "LDN_PARAM",
    "LIMIT_PARAM",
    "STRING_OR_NULL",
    "TIME",
    "TIME_OR_NULL",
    "UNIT",
    "answer",
    "error",
    "query",
    "ref",
    "time_param",
]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def answer(description: str, schema: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": ref(schema)}}
    return out


def error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


STRING_OR_NULL = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time", "description": "UTC, ISO-8601 with offset"}
TIME_OR_NULL = {**TIME, "type": ["string", "null"]}
UNIT = {
    "type": ["string", "null"],
    "description": "as the pages name it, in ASCII (Sm3, m3, d)",
}
LDN_PARAM = {
    "name": "ldn",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the meter's LDN",
}

DATE = {"type": "string", "format": "date"}
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}

AFTER_PARAM = {
    "name": "after",
    "in": "query",
    "schema": {"type": "string"},
    "description": "the cursor: next of the previous page",
}


def time_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": f"{description}; ISO-8601 with offset",
    }


BODY_ERRORS = ("400", "413", "415", "422")


def query(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }
