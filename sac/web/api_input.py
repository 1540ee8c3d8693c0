"""What a client of the JSON API sends: the body, the query and a meter's fields, checked.

The body is JSON of at most :data:`MAX_BODY` bytes (no member twice, no NaN or Infinity); a
bulk body holds 1 to :data:`MAX_ITEMS` items.  A meter's fields are checked by their
declarations (:data:`sac.web.schema.FIELDS`), as the web form's are; every refusal is a
problem ``{index, field, message}`` by the item's position, and a key's value never
appears in one.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sac.web.errors import ApiError
from sac.web.schema import (
    CHANGE_FIELDS,
    FIELDS,
    NEW_FIELDS,
    FieldError,
    check_poll_interval,
    kind,
)

__all__ = [
    "API",
    "CHANGE_FIELDS",
    "MAX_BODY",
    "MAX_ITEMS",
    "NEW_FIELDS",
    "check_fields",
    "invalid",
    "kind",
    "problem",
    "read_body",
    "read_items",
    "read_object",
    "read_query",
    "store_field",
]

API = "/api/v1"
MAX_BODY = 10 * 2**20  # bytes of a request body
MAX_ITEMS = 10_000  # meters (or LDNs) in one bulk request
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000  # meters a page of the list
_KEYISH = set(string.hexdigits + " :")

# the API's names of the store's fields (the rest are the same)
STORE_NAMES = {"poll_interval_s": "poll_interval"}


def problem(index: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}


def invalid(problems: list[dict[str, Any]], what: str = "items") -> ApiError:
    problems.sort(key=lambda p: -1 if p["index"] is None else p["index"])
    bad = len({p["index"] for p in problems})
    message = (
        f"{bad} of the {what} are refused: nothing is changed"
        if what == "items"
        else "the request is refused: nothing is changed"
    )
    return ApiError(422, "invalid", message, items=problems)


def shown(text: str) -> str:
    """A name the client sent, fit to repeat in a message: not one that may be a key sent
    by mistake as a name (8 hex digits or more)."""
    if len(text) >= 8 and not set(text) - _KEYISH:
        return "(a name like a key: not repeated)"
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the member {shown(key)} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_body(request: Any) -> Any:
    """The request's JSON body: 415 unless JSON, 413 over :data:`MAX_BODY`, 400 when it
    is not JSON (or has a member twice, NaN or Infinity)."""
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    length = request.getHeader(b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, "too_large", f"a body is at most {MAX_BODY // 2**20} MiB")
    request.content.seek(0)
    data = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, "too_large", f"a body is at most {MAX_BODY // 2**20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "malformed_json",
            f"the body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not accepted: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deep") from None


def read_object(request: Any, members: Iterable[str]) -> dict[str, Any]:
    """The body, which must be an object of these members only (400 otherwise)."""
    body = read_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object, not {kind(body)}")
    unknown = sorted(set(body) - set(members))
    if unknown:
        raise ApiError(
            400,
            "invalid_body",
            f"unknown members {', '.join(map(shown, unknown[:10]))}; "
            f"the body has {', '.join(members)}",
        )
    return body


def read_items(request: Any, member: str, extra: Iterable[str] = ()) -> tuple[list, dict]:
    """A bulk body: ``{member: [...], extra...}`` with 1 to :data:`MAX_ITEMS` items."""
    body = read_object(request, (member, *extra))
    items = body.get(member)
    if not isinstance(items, list):
        raise ApiError(400, "invalid_body", f"{member!r} must be an array, not {kind(items)}")
    if not items:
        raise ApiError(400, "invalid_body", f"{member!r} is empty: nothing to do")
    if len(items) > MAX_ITEMS:
        raise ApiError(
            422,
            "too_many_items",
            f"a request holds at most {MAX_ITEMS} items, not {len(items)}: split it",
        )
    return items, body


def read_query(
    request: Any, allowed: Iterable[str], repeatable: Iterable[str] = ()
) -> dict[str, str]:
    """The query parameters, each once (a ``repeatable`` one: its values joined by commas),
    each known (400 otherwise)."""
    out: dict[str, str] = {}
    for raw, values in request.args.items():
        try:
            name = raw.decode("utf-8")
            kept = values if name in repeatable else values[-1:]
            value = ",".join(v.decode("utf-8") for v in kept)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_parameter", "a query parameter is not UTF-8") from None
        if name not in allowed:
            raise ApiError(
                400,
                "bad_parameter",
                f"unknown query parameter {shown(name)}; known: {', '.join(allowed)}",
            )
        if len(values) > 1 and name not in repeatable:
            raise ApiError(400, "bad_parameter", f"the parameter {name!r} is given twice")
        out[name] = value
    return out


def check_fields(
    item: Any,
    profiles: Collection[str],
    allowed: Iterable[str],
    required: Iterable[str] = (),
    index: int | None = None,
    new: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fields of one meter, checked by the web form's rules: (values by the API's
    names, problems).  A key's value never appears in a problem.  A ``new`` meter has
    no address unless it gives one; a change keeps the meter's."""
    problems: list[dict[str, Any]] = []
    if not isinstance(item, dict):
        return {}, [problem(index, None, f"an item must be a JSON object, not {kind(item)}")]
    allowed = tuple(allowed)
    for name in sorted(set(item) - set(allowed)):
        said = shown(name)
        field = name if said.startswith("'") and len(name) <= 40 else None
        problems.append(problem(index, field, f"unknown field {said}"))
    values: dict[str, Any] = {}
    for name in allowed:
        if name not in item:
            if name in required:
                problems.append(problem(index, name, f"{name} is required"))
            continue
        value = item[name]
        try:
            values[name] = check_field(name, value, profiles)
        except FieldError as exc:
            problems.append(problem(index, name, str(exc)))
    if "ak" in values and values["ak"] is not None and values.get("ek") is None:
        problems.append(problem(index, "ak", "an AK is given with its EK (ek)"))
    poll = values.get("poll_interval_s")
    if poll is not None and ("address" in item or new):
        try:
            check_poll_interval(poll, values.get("address") is not None)
        except FieldError as exc:
            problems.append(problem(index, "poll_interval_s", str(exc)))
    return values, problems


def check_field(name: str, value: Any, profiles: Collection[str]) -> Any:
    """One field's value checked by its declaration (FieldError otherwise)."""
    return FIELDS[name].parse(value, profiles)


def store_field(why: str) -> str | None:
    """The field a refusal of the store is about, from its message."""
    lowered = why.lower()
    if "system title" in lowered:
        return "system_title"
    if "ldn" in lowered or "no meter" in lowered or lowered.startswith("meter "):
        return "ldn"
    if "the ek" in lowered:
        return "ek"
    if "the ak" in lowered:
        return "ak"
    if "poll interval" in lowered:
        return "poll_interval_s"
    return None


def query_time(query: Mapping[str, str], name: str) -> dt.datetime | None:
    """The time parameter ``name`` in UTC (None when absent): ISO-8601 with its offset."""
    if name not in query:
        return None
    try:
        value = dt.datetime.fromisoformat(query[name])
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ApiError(
            400,
            "bad_parameter",
            f"{name} is an ISO-8601 time with its offset, e.g. 2026-01-31T05:00:00Z",
        )
    return value.astimezone(dt.UTC)


def query_whole(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """The whole-number parameter ``name``, ``lo`` to ``hi`` (``default`` when absent)."""
    text = query.get(name, str(default))
    if not text.isascii() or not text.isdigit() or not lo <= int(text) <= hi:
        raise ApiError(400, "bad_parameter", f"{name} is a whole number {lo} to {hi}")
    return int(text)


def query_limit(query: Mapping[str, str]) -> int:
    """The ``limit`` parameter: 1 to MAX_LIMIT (DEFAULT_LIMIT when absent)."""
    return query_whole(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
