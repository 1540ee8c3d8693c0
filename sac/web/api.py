"""The JSON API for provisioning systems (``/api/v1/``): meters listed, read, added, changed,
disabled and deleted, one at a time or in bulk.

Authentication is ``Authorization: Bearer <token>`` only (tokens made on ``/admin/tokens`` or
with ``sac-admin create-token``); a browser's session cookie is never looked at, so there is
no CSRF to guard against.  The token's user's role applies as on the pages: a viewer reads,
an operator (or admin) changes.  Every change goes through the store with the actor
``<user> (API token #<id> <name>)`` and the client's address.

A bulk change is all or nothing: every item is checked (the same field rules as the web
form, by :mod:`sac.web.api_input`) and every refusal is reported by the item's position,
the store's conflicts included, before anything is written.  Keys are write-only: no answer,
error or log line holds one.  Every error is a JSON body ``{"error": {"code", "message"}}``.
The OpenAPI document (:func:`sac.web.openapi.openapi`) is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from klein import Klein

from sac.errors import BadCursor, SacError
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
from sac.web import api_commands, api_history, api_settings, display
from sac.web.api_events import acknowledgement, alarm_query, events_answer, events_query
from sac.web.api_history import iso, unit_text
from sac.web.api_input import (
    API,
    CHANGE_FIELDS,
    MAX_BODY,
    MAX_ITEMS,
    NEW_FIELDS,
    STORE_NAMES,
    check_fields,
    invalid,
    kind,
    problem,
    query_limit,
    query_time,
    read_body,
    read_items,
    read_query,
    store_field,
)
from sac.web.errors import ApiError, json_answer
from sac.web.errors import install as install_errors
from sac.web.openapi import openapi

__all__ = ["API", "MAX_BODY", "MAX_ITEMS", "ApiError", "JsonApi", "openapi"]

MAX_TOKEN = 256  # characters of a bearer token worth looking up
CHALLENGE = 'Bearer realm="sac"'


Handler = Callable[..., Awaitable[Any]]


def api(role: Role) -> Callable[[Handler], Handler]:
    """A route for API tokens of a user of at least ``role``; the handler gets the token."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def route(self: Any, request: Any, **kw: Any) -> Any:
            token = await self.token(request)
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


class JsonApi:
    """The JSON API's router (mounted at :data:`API`); ``web`` is the
    :class:`sac.web.app.Web` it shares with the pages."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.store = web.store
        self.registry = web.registry

    async def token(self, request: Any) -> ApiToken:
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
            "created": iso(m.created),
            "updated": iso(m.updated),
            "last_connection": iso(m.last_connection),
            "values_at": iso(m.status_at),
            "index": None,
            "diagnostic": None,
            "battery": None,
            "valve_state": None,
        }
        index = display.scaled(m.index_value, m.index_scaler)
        if index is not None:
            out["index"] = {
                "value": format(index, "f"),
                "unit": unit_text(m.index_unit),
                "unit_code": m.index_unit,
                "captured": iso(m.index_captured),
            }
        if m.diagnostic is not None:
            out["diagnostic"] = {
                "value": m.diagnostic,
                "flags": display.diagnostic_flags(
                    m.diagnostic, display.profile_bits(self.registry, m.profile)
                ),
            }
        if m.battery_value is not None:
            out["battery"] = {
                "value": m.battery_value,
                "unit": unit_text(m.battery_unit),
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

    def _bulk_problems(self, exc: BulkError, positions: list[int]) -> list[dict[str, Any]]:
        """The store's refusals, by the items' positions in the request."""
        out = []
        for at, why in exc.errors.items():
            if at < len(positions):
                out.append(problem(positions[at], store_field(why), why))
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

    @app.route("/openapi.json", methods=["GET"])
    def api_openapi(self, request: Any) -> bytes:
        return json_answer(request, 200, openapi(sorted(self.registry.profiles)))

    @app.route("/meters", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meters(self, request: Any, token: ApiToken) -> bytes:
        query = read_query(request, ("limit", "after", "changed_since", "state"))
        limit = query_limit(query)
        since = query_time(query, "changed_since")
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
        return json_answer(
            request,
            200,
            {
                "meters": [self._meter_json(m) for m in found.meters],
                "next": found.next_after,
                "total": found.total,
            },
        )

    @app.route("/meters/<ldn>", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise UnknownMeter(ldn)
        return json_answer(request, 200, await self._one_meter_json(meter))

    @app.route("/meters/<ldn>/connections", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter_connections(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_history.connections(self, request, ldn)

    @app.route("/meters", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_add_meters(self, request: Any, token: ApiToken) -> bytes:
        items, _ = read_items(request, "meters")
        problems: list[dict[str, Any]] = []
        batch: list[tuple[NewMeter, dict[int, tuple[bytes, bytes | None]]]] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            values, found = check_fields(
                item, self.registry.profiles, NEW_FIELDS, ("ldn",), i, new=True
            )
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
                    found.append(problem(i, None, str(exc)))
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
                raise invalid(self._bulk_problems(exc, positions)) from None
            body = [
                self._meter_json(m, bool(keys)) for m, (_, keys) in zip(added, batch, strict=True)
            ]
            return json_answer(request, 201, {"meters": body})
        if batch:
            # the store's refusals of the others too, checked only: nothing written
            try:
                await self.store.meters.add_many(batch, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise invalid(problems)

    @app.route("/meters", methods=["PATCH"])
    @api(Role.OPERATOR)
    async def api_update_meters(self, request: Any, token: ApiToken) -> bytes:
        items, _ = read_items(request, "meters")
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
                raise invalid(self._bulk_problems(exc, positions)) from None
            return json_answer(request, 200, {"meters": [self._meter_json(m) for m in changed]})
        if batch:
            # the store's refusals of the others too, checked only: nothing changed (the
            # keys were checked with the fields)
            trial = [(ldn, {k: v for k, v in c.items() if k != "keys"}) for ldn, c in batch]
            try:
                await self.store.meters.update_many(trial, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise invalid(problems)

    def _fields_by_ldn(self, item: Any, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A change of a bulk PATCH: the meter's LDN (any string: it names a meter that
        exists) and the fields to change."""
        if not isinstance(item, dict):
            return {}, [problem(index, None, f"an item must be a JSON object, not {kind(item)}")]
        rest = {k: v for k, v in item.items() if k != "ldn"}
        values, problems = check_fields(rest, self.registry.profiles, CHANGE_FIELDS[1:], (), index)
        ldn = item.get("ldn")
        if "ldn" not in item:
            problems.insert(0, problem(index, "ldn", "ldn is required: it names the meter"))
        elif not isinstance(ldn, str):
            problems.insert(0, problem(index, "ldn", f"ldn must be a string, not {kind(ldn)}"))
        else:
            values["ldn"] = ldn
        return values, problems

    @app.route("/meters/<ldn>", methods=["PATCH"])
    @api(Role.OPERATOR)
    async def api_update_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        body = read_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", f"the body must be a JSON object, not {kind(body)}")
        values, problems = check_fields(body, self.registry.profiles, CHANGE_FIELDS[1:])
        if problems:
            raise invalid(problems, "fields")
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise UnknownMeter(ldn)
        sap = self._management_sap(values.get("profile", meter.profile))
        changes = self._changes(values, sap if values.get("ek") is not None else None)
        by = self._api_actor(request, token)
        try:
            if "keys" in changes:
                (meter,) = await self.store.meters.update_many([(ldn, changes)], by)
            else:
                meter = await self.store.meters.update(ldn, changes, by)
        except (Conflict, BulkError) as exc:
            why = next(iter(exc.errors.values())) if isinstance(exc, BulkError) else str(exc)
            raise ApiError(
                409, "conflict", why, items=[problem(None, store_field(why), why)]
            ) from None
        return json_answer(request, 200, await self._one_meter_json(meter))

    async def _set_state(self, request: Any, token: ApiToken, ldn: str, state: MeterState) -> bytes:
        await self.store.meters.set_state(ldn, state, self._api_actor(request, token))
        meter = await self.store.meters.get(ldn)
        if meter is None:  # deleted meanwhile
            raise UnknownMeter(ldn)
        return json_answer(request, 200, await self._one_meter_json(meter))

    @app.route("/meters/<ldn>/disable", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_disable_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await self._set_state(request, token, ldn, MeterState.DISABLED)

    @app.route("/meters/<ldn>/enable", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_enable_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await self._set_state(request, token, ldn, MeterState.ACTIVE)

    @app.route("/meters/<ldn>", methods=["DELETE"])
    @api(Role.OPERATOR)
    async def api_delete_meter(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        query = read_query(request, ("purge",))
        purge = {"true": True, "1": True, "false": False, "0": False, "": False}.get(
            query.get("purge", "").lower()
        )
        if purge is None:
            raise ApiError(400, "bad_parameter", "purge is true or false")
        await self.store.meters.delete(ldn, self._api_actor(request, token), purge=purge)
        return json_answer(request, 204, None)

    @app.route("/meters/delete", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_delete_meters(self, request: Any, token: ApiToken) -> bytes:
        ldns, body = read_items(request, "ldns", ("purge",))
        purge = body.get("purge", False)
        if not isinstance(purge, bool):
            raise ApiError(400, "invalid_body", f"purge must be true or false, not {kind(purge)}")
        problems: list[dict[str, Any]] = []
        batch: list[str] = []
        positions: list[int] = []
        seen: dict[str, int] = {}
        for i, ldn in enumerate(ldns):
            if not isinstance(ldn, str):
                problems.append(problem(i, "ldn", f"an LDN must be a string, not {kind(ldn)}"))
            elif ldn in seen:
                problems.append(problem(i, "ldn", f"LDN {ldn} is also item #{seen[ldn]}"))
            else:
                seen[ldn] = i
                batch.append(ldn)
                positions.append(i)
        by = self._api_actor(request, token)
        if not problems:
            try:
                await self.store.meters.delete_many(batch, by, purge=purge)
            except BulkError as exc:
                raise invalid(self._bulk_problems(exc, positions)) from None
            return json_answer(request, 200, {"deleted": len(batch), "purged": purge})
        if batch:
            # the store's refusals of the others too, checked only: nothing deleted
            try:
                await self.store.meters.delete_many(batch, purge=purge, check_only=True)
            except BulkError as exc:
                problems += self._bulk_problems(exc, positions)
        raise invalid(problems)

    # --- history (sac.web.api_history) ------------------------------------------------------

    @app.route("/meters/<ldn>/readings", methods=["GET"])
    @api(Role.VIEWER)
    async def api_object_readings(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_history.object_readings(self, request, ldn)

    @app.route("/meters/<ldn>/daily", methods=["GET"])
    @api(Role.VIEWER)
    async def api_daily(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_history.daily(self, request, ldn)

    @app.route("/meters/<ldn>/settings", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter_settings(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_settings.meter_settings(self, request, ldn)

    @app.route("/exports/month-start", methods=["GET"])
    @api(Role.VIEWER)
    async def api_month_start(self, request: Any, token: ApiToken) -> bytes:
        return await api_history.month_start(self, request)

    # --- events and alarms (sac.web.api_events) ------------------------------------------

    @app.route("/meters/<ldn>/events", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter_events(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        query = read_query(request, ("start", "end", "cursor", "limit"))
        start, end, cursor, limit = events_query(query)
        try:
            page = await self.store.exports.events(start, end, ldn=ldn, cursor=cursor, limit=limit)
        except BadCursor:
            raise ApiError(400, "bad_parameter", "cursor is not one of this query's") from None
        body = await events_answer(page.events, page.cursor, self.store, self.registry)
        return json_answer(request, 200, body)

    @app.route("/alarms", methods=["GET"])
    @api(Role.VIEWER)
    async def api_alarms(self, request: Any, token: ApiToken) -> bytes:
        query = read_query(request, ("category", "ldn", "cursor", "limit"))
        category, ldn, cursor, limit = alarm_query(query)
        try:
            page = await self.store.events.open_alarms(ldn, category, cursor, limit)
        except BadCursor:
            raise ApiError(400, "bad_parameter", "cursor is not one of this list's") from None
        body = await events_answer(page.alarms, page.cursor, self.store, self.registry)
        return json_answer(request, 200, body)

    @app.route("/alarms/<int:alarm_id>/acknowledge", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_acknowledge(self, request: Any, token: ApiToken, alarm_id: int) -> bytes:
        note = acknowledgement(request)
        by = self._api_actor(request, token)
        event = await self.store.events.acknowledge(alarm_id, by, note)
        body = await events_answer((event,), None, self.store, self.registry)
        return json_answer(request, 200, body["events"][0])

    # --- commands (sac.web.api_commands) ------------------------------------------------

    @app.route("/meters/<ldn>/commands", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_queue_command(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_commands.queued(self, request, token, ldn)

    @app.route("/meters/<ldn>/commands", methods=["GET"])
    @api(Role.VIEWER)
    async def api_meter_commands(self, request: Any, token: ApiToken, ldn: str) -> bytes:
        return await api_commands.listed(self, request, ldn)

    @app.route("/commands", methods=["GET"])
    @api(Role.VIEWER)
    async def api_list_commands(self, request: Any, token: ApiToken) -> bytes:
        return await api_commands.listed(self, request)

    @app.route("/commands/<int:command_id>", methods=["GET"])
    @api(Role.VIEWER)
    async def api_command(self, request: Any, token: ApiToken, command_id: int) -> bytes:
        return await api_commands.one(self, request, command_id)

    @app.route("/commands/<int:command_id>/cancel", methods=["POST"])
    @api(Role.OPERATOR)
    async def api_cancel_command(self, request: Any, token: ApiToken, command_id: int) -> bytes:
        return await api_commands.cancel(self, request, token, command_id)

    install_errors(app, lambda api: api.web.render, lambda request: True)
