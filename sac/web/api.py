"""The JSON API for provisioning systems (``/api/v1/``): meters listed, read, added, changed,
disabled and deleted, one at a time or in bulk.

Authentication is ``Authorization: Bearer <token>`` only (tokens made on ``/admin/tokens`` or
with ``sac-admin create-token``); a browser's session cookie is never looked at, so there is
no CSRF to guard against.  The token's user's role applies as on the pages: a viewer reads,
an operator (or admin) changes.  Every change goes through the store with the actor
``<user> (API token #<id> <name>)`` and the client's address.

A bulk change is all or nothing: every item is checked (the same field rules as the web
form, :mod:`sac.web.forms`) and every refusal is reported by the item's position, the
store's conflicts included, before anything is written.  Keys are write-only: no answer,
error or log line holds one.  Every error is a JSON body ``{"error": {"code", "message"}}``.
The OpenAPI document (:func:`openapi`) is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sac.errors import ConfigurationError, SacError
from sac.store import (
    Actor,
    ApiToken,
    BulkError,
    Conflict,
    Meter,
    MeterQuery,
    MeterState,
    NewMeter,
    Role,
    UnknownMeter,
)
from sac.web import display
from sac.web.common import routes
from sac.web.forms import (
    FieldError,
    check_address,
    check_ips,
    check_key,
    check_ldn,
    check_pdr,
    check_poll_interval,
    check_profile,
    check_system_title,
)

__all__ = ["API", "MAX_BODY", "MAX_ITEMS", "ApiError", "ApiRoutes", "is_api", "openapi"]

API = "/api/v1"
MAX_BODY = 10 * 2**20  # bytes of a request body
MAX_ITEMS = 10_000  # meters (or LDNs) in one bulk request
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000  # meters a page of the list
MAX_TOKEN = 256  # characters of a bearer token worth looking up
CHALLENGE = 'Bearer realm="sac"'
_KEYISH = set(string.hexdigits + " :")

# the fields of a meter an API client writes (keys only written, never read back)
NEW_FIELDS = (
    "ldn",
    "pdr",
    "system_title",
    "profile",
    "address",
    "allowed_ips",
    "poll_interval_s",
    "ek",
    "ak",
)
CHANGE_FIELDS = (*NEW_FIELDS, "state")
# null: none (pdr, system title, address, poll interval), no keys (ek), AK = EK (ak)
NULLABLE = frozenset({"pdr", "system_title", "address", "poll_interval_s", "ek", "ak"})
# the API's names of the store's fields (the rest are the same)
STORE_NAMES = {"poll_interval_s": "poll_interval"}


class ApiError(SacError):
    """A refusal of the API: an HTTP status, a code a program can test, a message a person
    can read, and for a bulk request ``items`` [{index, field, message}]."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        items: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.items = items
        self.headers = dict(headers or {})


def is_api(request: Any) -> bool:
    """Whether a request is the API's (its errors are JSON, not a page)."""
    return bool(request.path.startswith(b"/api/"))


def _problem(index: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}


def _invalid(problems: list[dict[str, Any]], what: str = "items") -> ApiError:
    problems.sort(key=lambda p: -1 if p["index"] is None else p["index"])
    bad = len({p["index"] for p in problems})
    message = (
        f"{bad} of the {what} are refused: nothing is changed"
        if what == "items"
        else "the request is refused: nothing is changed"
    )
    return ApiError(422, "invalid", message, items=problems)


def _kind(value: Any) -> str:
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


def _name(text: str) -> str:
    """A name the client sent, fit to repeat in a message: not one that may be a key sent
    by mistake as a name (8 hex digits or more)."""
    if len(text) >= 8 and not set(text) - _KEYISH:
        return "(a name like a key: not repeated)"
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _unit(code: int | None) -> str | None:
    """A DLMS unit as the pages name it, in ASCII (``Sm3``, ``m3``, ``d``)."""
    if code is None:
        return None
    return display.unit_name(code).replace("³", "3")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the member {_name(key)} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


Handler = Callable[..., Awaitable[Any]]


def api(role: Role) -> Callable[[Handler], Handler]:
    """A route for API tokens of a user of at least ``role``; the handler gets the token."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def route(self: Any, request: Any, **kw: Any) -> Any:
            token = await self._api_token(request)
            if not token.user.role.may(role):
                raise ApiError(
                    403,
                    "forbidden",
                    f"this needs the {role.value} role; {token.user.name} is a "
                    f"{token.user.role.value}",
                )
            return await handler(self, request, token, **kw)

        return route

    return wrap


class ApiRoutes:
    """Routes of :class:`sac.web.app.Web` under ``/api/v1``; ``self`` is the Web."""

    store: Any
    registry: Any
    _headers: Callable[[Any], None]
    _bits: Callable[[str], Mapping[int, str]]

    # --- plumbing ------------------------------------------------------------------------

    def _is_api(self, request: Any) -> bool:
        return is_api(request)

    def _json(self, request: Any, status: int, body: Any) -> bytes:
        self._headers(request)
        request.setResponseCode(status)
        if body is None:  # 204
            return b""
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _api_error(
        self,
        request: Any,
        status: int,
        code: str,
        message: str,
        items: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The JSON error body every failure of an API request gets (the app's error
        handlers use it for the API's paths)."""
        for name, value in (headers or {}).items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        error: dict[str, Any] = {"code": code, "message": message}
        if items is not None:
            error["items"] = items
        return self._json(request, status, {"error": error})

    @routes.handle_errors(ApiError)
    def api_refused(self, request: Any, failure: Any) -> bytes:
        exc: ApiError = failure.value
        return self._api_error(request, exc.status, exc.code, exc.message, exc.items, exc.headers)

    async def _api_token(self, request: Any) -> ApiToken:
        header = request.getHeader(b"authorization")
        if header is None:
            raise ApiError(
                401,
                "unauthorized",
                "send the API token as Authorization: Bearer <token>",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        scheme, _, secret = header.decode("latin-1").strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header is not Bearer <token>",
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_request"'},
            )
        token = await self.store.tokens.get(secret) if len(secret) <= MAX_TOKEN else None
        if token is None:
            raise ApiError(
                401,
                "unauthorized",
                "the token is not valid: unknown, revoked, or its user is disabled",
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        return token

    def _api_actor(self, request: Any, token: ApiToken) -> Actor:
        name = f"{token.user.name} (API token #{token.id} {token.name})"
        return Actor(name, request.getClientAddress().host)

    def _body(self, request: Any) -> Any:
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

    def _object(self, request: Any, members: Iterable[str]) -> dict[str, Any]:
        """The body, which must be an object of these members only (400 otherwise)."""
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(
                400, "invalid_body", f"the body must be a JSON object, not {_kind(body)}"
            )
        unknown = sorted(set(body) - set(members))
        if unknown:
            raise ApiError(
                400,
                "invalid_body",
                f"unknown members {', '.join(map(_name, unknown[:10]))}; "
                f"the body has {', '.join(members)}",
            )
        return body

    def _items(self, request: Any, member: str, extra: Iterable[str] = ()) -> tuple[list, dict]:
        """A bulk body: ``{member: [...], extra...}`` with 1 to :data:`MAX_ITEMS` items."""
        body = self._object(request, (member, *extra))
        items = body.get(member)
        if not isinstance(items, list):
            raise ApiError(400, "invalid_body", f"{member!r} must be an array, not {_kind(items)}")
        if not items:
            raise ApiError(400, "invalid_body", f"{member!r} is empty: nothing to do")
        if len(items) > MAX_ITEMS:
            raise ApiError(
                422,
                "too_many_items",
                f"a request holds at most {MAX_ITEMS} items, not {len(items)}: split it",
            )
        return items, body

    def _query(self, request: Any, allowed: Iterable[str]) -> dict[str, str]:
        """The query parameters, each once, each known (400 otherwise)."""
        out: dict[str, str] = {}
        for raw, values in request.args.items():
            try:
                name = raw.decode("utf-8")
                value = values[-1].decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "bad_parameter", "a query parameter is not UTF-8") from None
            if name not in allowed:
                raise ApiError(
                    400,
                    "bad_parameter",
                    f"unknown query parameter {_name(name)}; known: {', '.join(allowed)}",
                )
            if len(values) > 1:
                raise ApiError(400, "bad_parameter", f"the parameter {name!r} is given twice")
            out[name] = value
        return out

    # --- a meter as JSON -----------------------------------------------------------------

    def _meter_json(self, m: Meter, keys: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ldn": m.ldn,
            "pdr": m.pdr,
            "system_title": m.system_title.hex().upper() if m.system_title else None,
            "profile": m.profile,
            "state": m.state.value,
            "address": m.address,
            "allowed_ips": list(m.allowed_ips),
            "poll_interval_s": m.poll_interval,
            "created": _time(m.created),
            "updated": _time(m.updated),
            "last_connection": _time(m.last_connection),
            "values_at": _time(m.status_at),
            "index": None,
            "diagnostic": None,
            "battery": None,
            "valve_state": None,
        }
        index = display.scaled(m.index_value, m.index_scaler)
        if index is not None:
            out["index"] = {
                "value": format(index, "f"),
                "unit": _unit(m.index_unit),
                "unit_code": m.index_unit,
                "captured": _time(m.index_captured),
            }
        if m.diagnostic is not None:
            out["diagnostic"] = {
                "value": m.diagnostic,
                "flags": display.diagnostic_flags(m.diagnostic, self._bits(m.profile)),
            }
        if m.battery_value is not None:
            out["battery"] = {
                "value": m.battery_value,
                "unit": _unit(m.battery_unit),
                "unit_code": m.battery_unit,
            }
        if m.valve_state is not None:
            out["valve_state"] = {
                "code": m.valve_state,
                "name": display.valve_name(m.valve_state),
            }
        if keys is not None:
            out["keys"] = {"management": "set" if keys else "missing"}
        return out

    def _management_sap(self, profile: str) -> int:
        return int(self.registry.match(assigned=profile).clients["management"])

    async def _one_meter_json(self, m: Meter) -> dict[str, Any]:
        """A meter with whether its Management keys are set (one look-up; they stay
        wrapped)."""
        try:
            keys = await self.store.keys.has(m.ldn, self._management_sap(m.profile))
        except SacError:  # a profile gone, the meter deleted meanwhile
            keys = False
        return self._meter_json(m, keys)

    # --- checking what a client sent ------------------------------------------------------

    def _fields(
        self,
        item: Any,
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
            return {}, [_problem(index, None, f"an item must be a JSON object, not {_kind(item)}")]
        allowed = tuple(allowed)
        for name in sorted(set(item) - set(allowed)):
            shown = _name(name)
            field = name if shown.startswith("'") and len(name) <= 40 else None
            problems.append(_problem(index, field, f"unknown field {shown}"))
        values: dict[str, Any] = {}
        for name in allowed:
            if name not in item:
                if name in required:
                    problems.append(_problem(index, name, f"{name} is required"))
                continue
            value = item[name]
            try:
                values[name] = self._field(name, value)
            except FieldError as exc:
                problems.append(_problem(index, name, str(exc)))
        if "ak" in values and values["ak"] is not None and values.get("ek") is None:
            problems.append(_problem(index, "ak", "an AK is given with its EK (ek)"))
        poll = values.get("poll_interval_s")
        if poll is not None and ("address" in item or new):
            try:
                check_poll_interval(poll, values.get("address") is not None)
            except FieldError as exc:
                problems.append(_problem(index, "poll_interval_s", str(exc)))
        return values, problems

    def _field(self, name: str, value: Any) -> Any:
        """One field's value checked (FieldError otherwise); a null where it may be."""
        if value is None:
            if name in NULLABLE:
                return None
            raise FieldError(f"{name} must not be null")
        if name == "allowed_ips":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise FieldError(
                    f"allowed_ips must be an array of IP address strings, not {_kind(value)}"
                    if not isinstance(value, list)
                    else "allowed_ips must be an array of IP address strings"
                )
            return check_ips(value)
        if name == "poll_interval_s":
            if isinstance(value, bool) or not isinstance(value, int):
                raise FieldError(
                    f"poll_interval_s must be a whole number of seconds, not {_kind(value)}"
                )
            return check_poll_interval(value, True)
        if not isinstance(value, str):
            raise FieldError(f"{name} must be a string, not {_kind(value)}")
        if name == "ldn":
            return check_ldn(value)
        if name == "pdr":
            return check_pdr(value)
        if name == "system_title":
            return check_system_title(value)
        if name == "profile":
            return check_profile(value, self.registry.profiles)
        if name == "address":
            return check_address(value)
        if name in ("ek", "ak"):
            return check_key(value)
        if name == "state":
            if value not in ("active", "disabled"):
                raise FieldError("state must be active or disabled")
            return value
        raise AssertionError(name)  # pragma: no cover -- every allowed field is above

    def _bulk_problems(self, exc: BulkError, positions: list[int]) -> list[dict[str, Any]]:
        """The store's refusals, by the items' positions in the request."""
        out = []
        for at, why in exc.errors.items():
            if at < len(positions):
                out.append(_problem(positions[at], _store_field(why), why))
        return out

    def _changes(self, values: Mapping[str, Any], sap: int | None) -> dict[str, Any]:
        """What the store's update_meters takes, from the checked fields of one item."""
        changes = {
            STORE_NAMES.get(k, k): v for k, v in values.items() if k not in ("ldn", "ek", "ak")
        }
        if values.get("ek") is not None:
            assert sap is not None
            changes["keys"] = {sap: (values["ek"], values.get("ak"))}
        return changes

    async def _sap_for(self, ldn: str, values: Mapping[str, Any]) -> int | None:
        """The Management client SAP new keys of a meter go to: its (new) profile's."""
        if values.get("ek") is None:
            return None
        if "profile" in values:
            return self._management_sap(values["profile"])
        saps = {self._management_sap(p) for p in self.registry.profiles}
        if len(saps) == 1:  # every profile agrees: no need to read the meter
            return saps.pop()
        meter = await self.store.meters.get(ldn)
        return self._management_sap(meter.profile if meter else self.registry.default)

    # --- routes ---------------------------------------------------------------------------

    @routes.route(f"{API}/openapi.json", methods=["GET"])
    def api_openapi(self, request: Any) -> bytes:
        return self._json(request, 200, openapi(sorted(self.registry.profiles)))

    @routes.route(f"{API}/meters", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meters(self, request: Any, token: ApiToken) -> bytes:
        query = self._query(request, ("limit", "after", "changed_since", "state"))
        limit_text = query.get("limit", str(DEFAULT_LIMIT))
        if not limit_text.isascii() or not limit_text.isdigit():
            raise ApiError(400, "bad_parameter", f"limit is a whole number 1 to {MAX_LIMIT}")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "bad_parameter", f"limit is a whole number 1 to {MAX_LIMIT}")
        since = None
        if "changed_since" in query:
            try:
                since = dt.datetime.fromisoformat(query["changed_since"])
            except ValueError:
                since = None
            if since is None or since.tzinfo is None:
                raise ApiError(
                    400,
                    "bad_parameter",
                    "changed_since is an ISO-8601 time with its offset, e.g. 2025-01-31T23:00:00Z",
                )
            since = since.astimezone(dt.UTC)
        state = None
        if "state" in query:
            try:
                state = MeterState(query["state"])
            except ValueError:
                raise ApiError(400, "bad_parameter", "state is active or disabled") from None
        after = query.get("after") or None
        try:
            found = await self.store.meters.page(
                after=after,
                limit=limit,
                query=MeterQuery(state=state, changed_since=since),
            )
        except ValueError:
            raise ApiError(400, "bad_parameter", "after is not a cursor of this list") from None
        return self._json(
            request,
            200,
            {
                "meters": [self._meter_json(m) for m in found.meters],
                "next": found.next_after,
                "total": found.total,
            },
        )

    @routes.route(f"{API}/meters/<ldn>", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise ApiError(404, "not_found", f"no meter {ldn!r}")
        return self._json(request, 200, await self._one_meter_json(meter))

    @routes.route(f"{API}/meters", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_add_meters(self, request: Any, token: ApiToken) -> bytes:
        items, _ = self._items(request, "meters")
        problems: list[dict[str, Any]] = []
        batch: list[tuple[NewMeter, dict[int, tuple[bytes, bytes | None]]]] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            values, found = self._fields(item, NEW_FIELDS, ("ldn",), i, new=True)
            meter = None
            if not found:
                try:
                    meter = NewMeter(
                        ldn=values["ldn"],
                        pdr=values.get("pdr"),
                        system_title=values.get("system_title"),
                        profile=values.get("profile") or self.registry.default,
                        address=values.get("address"),
                        allowed_ips=values.get("allowed_ips", ()),
                        poll_interval=values.get("poll_interval_s"),
                    )
                except ValueError as exc:  # pragma: no cover -- the checks above are stricter
                    found.append(_problem(i, None, str(exc)))
            if meter is not None:
                keys = {}
                if values.get("ek") is not None:
                    keys[self._management_sap(meter.profile)] = (values["ek"], values.get("ak"))
                batch.append((meter, keys))
                positions.append(i)
            elif "ldn" in values:  # still checked against the store: its LDN, its title
                title = values.get("system_title")
                batch.append((NewMeter(values["ldn"], system_title=title), {}))
                positions.append(i)
            problems += found
        by = self._api_actor(request, token)
        if not problems:
            try:
                added = await self.store.meters.add_many(batch, by)
            except BulkError as exc:
                raise _invalid(self._bulk_problems(exc, positions)) from None
            except ConfigurationError as exc:
                raise ApiError(503, "unavailable", str(exc)) from None
            body = [
                self._meter_json(m, bool(keys)) for m, (_, keys) in zip(added, batch, strict=True)
            ]
            return self._json(request, 201, {"meters": body})
        if batch:
            # the store's refusals of the others too, checked only: nothing written
            try:
                await self.store.meters.add_many(batch, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise _invalid(problems)

    @routes.route(f"{API}/meters", methods=["PATCH"])
    @api(Role.OPERATOR)
    async def api_update_meters(self, request: Any, token: ApiToken) -> bytes:
        items, _ = self._items(request, "meters")
        problems: list[dict[str, Any]] = []
        batch: list[tuple[str, dict[str, Any]]] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            values, found = self._fields_by_ldn(item, i)
            if isinstance(values.get("ldn"), str):
                changes = {}
                if not found:
                    sap = await self._sap_for(values["ldn"], values)
                    changes = self._changes(values, sap)
                batch.append((values["ldn"], changes))
                positions.append(i)
            problems += found
        by = self._api_actor(request, token)
        if not problems:
            try:
                changed = await self.store.meters.update_many(batch, by)
            except BulkError as exc:
                raise _invalid(self._bulk_problems(exc, positions)) from None
            except ConfigurationError as exc:
                raise ApiError(503, "unavailable", str(exc)) from None
            return self._json(request, 200, {"meters": [self._meter_json(m) for m in changed]})
        if batch:
            # the store's refusals of the others too, checked only: nothing changed (the
            # keys were checked with the fields)
            trial = [(ldn, {k: v for k, v in c.items() if k != "keys"}) for ldn, c in batch]
            try:
                await self.store.meters.update_many(trial, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise _invalid(problems)

    def _fields_by_ldn(self, item: Any, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A change of a bulk PATCH: the meter's LDN (any string: it names a meter that
        exists) and the fields to change."""
        if not isinstance(item, dict):
            return {}, [_problem(index, None, f"an item must be a JSON object, not {_kind(item)}")]
        rest = {k: v for k, v in item.items() if k != "ldn"}
        values, problems = self._fields(rest, CHANGE_FIELDS[1:], (), index)
        ldn = item.get("ldn")
        if "ldn" not in item:
            problems.insert(0, _problem(index, "ldn", "ldn is required: it names the meter"))
        elif not isinstance(ldn, str):
            problems.insert(0, _problem(index, "ldn", f"ldn must be a string, not {_kind(ldn)}"))
        else:
            values["ldn"] = ldn
        return values, problems

    @routes.route(f"{API}/meters/<ldn>", methods=["PATCH"])
    @api(Role.OPERATOR)
    async def api_update_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(
                400, "invalid_body", f"the body must be a JSON object, not {_kind(body)}"
            )
        values, problems = self._fields(body, CHANGE_FIELDS[1:])
        if problems:
            raise _invalid(problems, "fields")
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise ApiError(404, "not_found", f"no meter {ldn!r}")
        sap = self._management_sap(values.get("profile", meter.profile))
        changes = self._changes(values, sap if values.get("ek") is not None else None)
        by = self._api_actor(request, token)
        try:
            if "keys" in changes:
                (meter,) = await self.store.meters.update_many([(ldn, changes)], by)
            else:
                meter = await self.store.meters.update(ldn, changes, by)
        except UnknownMeter:
            raise ApiError(404, "not_found", f"no meter {ldn!r}") from None
        except (Conflict, BulkError) as exc:
            why = next(iter(exc.errors.values())) if isinstance(exc, BulkError) else str(exc)
            raise ApiError(
                409, "conflict", why, items=[_problem(None, _store_field(why), why)]
            ) from None
        except ConfigurationError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        return self._json(request, 200, await self._one_meter_json(meter))

    async def _set_state(self, request: Any, token: ApiToken, ldn: str, state: MeterState) -> bytes:
        try:
            await self.store.meters.set_state(ldn, state, self._api_actor(request, token))
        except UnknownMeter:
            raise ApiError(404, "not_found", f"no meter {ldn!r}") from None
        meter = await self.store.meters.get(ldn)
        if meter is None:  # deleted meanwhile
            raise ApiError(404, "not_found", f"no meter {ldn!r}")
        return self._json(request, 200, await self._one_meter_json(meter))

    @routes.route(f"{API}/meters/<ldn>/disable", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_disable_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await self._set_state(request, token, ldn, MeterState.DISABLED)

    @routes.route(f"{API}/meters/<ldn>/enable", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_enable_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await self._set_state(request, token, ldn, MeterState.ACTIVE)

    @routes.route(f"{API}/meters/<ldn>", methods=["DELETE"])
    @api(Role.OPERATOR)
    async def api_delete_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        query = self._query(request, ("purge",))
        purge = {"true": True, "1": True, "false": False, "0": False, "": False}.get(
            query.get("purge", "").lower()
        )
        if purge is None:
            raise ApiError(400, "bad_parameter", "purge is true or false")
        try:
            await self.store.meters.delete(ldn, self._api_actor(request, token), purge=purge)
        except UnknownMeter:
            raise ApiError(404, "not_found", f"no meter {ldn!r}") from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        return self._json(request, 204, None)

    @routes.route(f"{API}/meters/delete", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_delete_meters(self, request: Any, token: ApiToken) -> bytes:
        ldns, body = self._items(request, "ldns", ("purge",))
        purge = body.get("purge", False)
        if not isinstance(purge, bool):
            raise ApiError(400, "invalid_body", f"purge must be true or false, not {_kind(purge)}")
        problems: list[dict[str, Any]] = []
        batch: list[str] = []
        positions: list[int] = []
        seen: dict[str, int] = {}
        for i, ldn in enumerate(ldns):
            if not isinstance(ldn, str):
                problems.append(_problem(i, "ldn", f"an LDN must be a string, not {_kind(ldn)}"))
            elif ldn in seen:
                problems.append(_problem(i, "ldn", f"LDN {ldn} is also item #{seen[ldn]}"))
            else:
                seen[ldn] = i
                batch.append(ldn)
                positions.append(i)
        by = self._api_actor(request, token)
        if not problems:
            try:
                await self.store.meters.delete_many(batch, by, purge=purge)
            except BulkError as exc:
                raise _invalid(self._bulk_problems(exc, positions)) from None
            return self._json(request, 200, {"deleted": len(batch), "purged": purge})
        if batch:
            # the store's refusals of the others too, checked only: nothing deleted
            try:
                await self.store.meters.delete_many(batch, purge=purge, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise _invalid(problems)


def _store_field(why: str) -> str | None:
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


# --- the OpenAPI document -------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": _ref(schema)}}
    return out


def _error(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def openapi(profiles: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes above."""
    profiles = list(profiles)
    string_or_null = {"type": ["string", "null"]}
    time = {"type": "string", "format": "date-time", "description": "UTC, ISO-8601 with offset"}
    time_or_null = {**time, "type": ["string", "null"]}
    hex_key = {
        "type": "string",
        "pattern": "^([0-9A-Fa-f]{2}[ :]?){15}[0-9A-Fa-f]{2}$",
        "description": "16 bytes in hex (32 digits; spaces or colons between bytes allowed). "
        "Write-only: never returned.",
        "writeOnly": True,
    }
    fields: dict[str, Any] = {
        "ldn": {
            "type": "string",
            "minLength": 16,
            "maxLength": 16,
            "description": "logical device name: 16 printable ASCII characters, no space",
        },
        "pdr": {**string_or_null, "pattern": "^[0-9]{14}$", "description": "14 digits"},
        "system_title": {
            **string_or_null,
            "description": "8 bytes in hex (16 digits); how a meter's pushes are found",
        },
        "profile": {
            "type": "string",
            "description": "the meter's profile (default: the SAC's default profile)",
            **({"enum": profiles} if profiles else {}),
        },
        "address": {**string_or_null, "description": "host:port to poll, or null"},
        "allowed_ips": {
            "type": "array",
            "items": {"type": "string", "description": "an IPv4 or IPv6 address"},
            "description": "addresses the meter may connect from (empty: any)",
        },
        "poll_interval_s": {
            "type": ["integer", "null"],
            "minimum": 60,
            "maximum": 527040 * 60,
            "description": "seconds between polls; only with an address",
        },
        "ek": {
            **hex_key,
            "type": ["string", "null"],
            "description": "Management client's encryption key (null or absent: no keys "
            "given). " + hex_key["description"],
        },
        "ak": {
            **hex_key,
            "type": ["string", "null"],
            "description": "Management client's authentication key (null or absent: AK = "
            "EK); only with ek. " + hex_key["description"],
        },
        "state": {"type": "string", "enum": ["active", "disabled"]},
    }
    change_fields = {k: v for k, v in fields.items() if k != "ldn"}
    unit = {
        "type": ["string", "null"],
        "description": "as the pages name it, in ASCII (Sm3, m3, d)",
    }
    schemas: dict[str, Any] = {
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
                "pdr": string_or_null,
                "system_title": {**string_or_null, "description": "16 hex digits, upper case"},
                "profile": {"type": "string"},
                "state": {"type": "string", "enum": ["active", "disabled"]},
                "address": string_or_null,
                "allowed_ips": {"type": "array", "items": {"type": "string"}},
                "poll_interval_s": {"type": ["integer", "null"]},
                "created": time,
                "updated": time,
                "last_connection": time_or_null,
                "values_at": {
                    **time_or_null,
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
                        "unit": unit,
                        "unit_code": {"type": ["integer", "null"], "description": "DLMS unit"},
                        "captured": time_or_null,
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
                        "unit": unit,
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
        "NewMeter": {
            "type": "object",
            "required": ["ldn"],
            "additionalProperties": False,
            "properties": {k: v for k, v in fields.items() if k != "state"},
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
            "properties": change_fields,
        },
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
                    **string_or_null,
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
                                    "field": string_or_null,
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
    }
    responses = {
        "BadRequest": _answer(
            "malformed JSON, a body of the wrong shape, or a bad query parameter", "Error"
        ),
        "Unauthorized": {
            **_answer("no token, not a Bearer token, or a token not valid", "Error"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "Forbidden": _answer("the token's user's role does not allow this", "Error"),
        "NotFound": _answer("no such meter", "Error"),
        "Conflict": _answer("refused by what is stored (a system title taken, history)", "Error"),
        "TooLarge": _answer(f"a body over {MAX_BODY // 2**20} MiB", "Error"),
        "Unsupported": _answer("a body not sent as application/json", "Error"),
        "Invalid": _answer("items or fields refused, each listed; nothing is changed", "Error"),
    }
    ldn_param = {
        "name": "ldn",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the meter's LDN",
    }

    def op(
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

    body_errors = ("400", "413", "415", "422")
    paths = {
        f"{API}/openapi.json": {
            "get": op(
                "This document",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                public=True,
            )
        },
        f"{API}/meters": {
            "get": op(
                "List meters, by LDN, in pages",
                {"200": _answer("a page of meters (no keys member)", "MeterPage")},
                errors=("400",),
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "the cursor: next of the previous page",
                    },
                    {
                        "name": "changed_since",
                        "in": "query",
                        "schema": {"type": "string", "format": "date-time"},
                        "description": "only meters added, changed or heard from since "
                        "(ISO-8601 with offset)",
                    },
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["active", "disabled"]},
                    },
                ],
            ),
            "post": op(
                "Add meters, with their Management keys: all or none",
                {"201": _answer("the meters added, in the request's order", "Meters")},
                errors=body_errors,
                body="NewMeters",
            ),
            "patch": op(
                "Change meters (fields, state, keys): all or none",
                {"200": _answer("the meters as they are now (no keys member)", "Meters")},
                errors=body_errors,
                body="MeterChanges",
            ),
        },
        f"{API}/meters/delete": {
            "post": op(
                "Delete meters: all or none",
                {"200": _answer("how many were deleted", "Deleted")},
                errors=body_errors,
                body="Deletion",
            )
        },
        f"{API}/meters/{{ldn}}": {
            "get": op(
                "One meter",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[ldn_param],
            ),
            "patch": op(
                "Change one meter",
                {"200": _answer("the meter as it is now", "Meter")},
                errors=(*body_errors, "404", "409"),
                body="MeterChangeOne",
                params=[ldn_param],
            ),
            "delete": op(
                "Delete one meter",
                {"204": {"description": "deleted"}},
                errors=("400", "404", "409"),
                params=[
                    ldn_param,
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
        f"{API}/meters/{{ldn}}/disable": {
            "post": op(
                "Disable a meter (its pushes are refused)",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[ldn_param],
            )
        },
        f"{API}/meters/{{ldn}}/enable": {
            "post": op(
                "Enable a meter again",
                {"200": _answer("the meter", "Meter")},
                errors=("404",),
                params=[ldn_param],
            )
        },
    }
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
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (admin page /admin/tokens or "
                    "sac-admin create-token); acts with its user's role",
                }
            },
            "schemas": schemas,
            "responses": responses,
        },
    }
