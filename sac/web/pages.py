"""The operators' pages (mounted at ``/``): sign-in, the meter list, a meter, adding
meters and importing keys, the valve, the status and the metrics.

Every page but the sign-in, the static files, ``/health`` and ``/metrics`` needs a signed-in
user (:func:`sac.web.common.page`).  Every form carries the session's CSRF token; a POST
without the right one is refused before anything is read.  Roles: viewers read, operators
add meters, import keys and queue commands.  Every change goes through the store with the
user as the audit trail's actor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hmac
import json
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlencode

from klein import Klein
from werkzeug.exceptions import NotFound

from sac.errors import Conflict, KeyImportError
from sac.services import commands as command_service
from sac.services.metrics import CONTENT_TYPE
from sac.store import CommandState, Role, WebSession
from sac.store.keycsv import SAMPLE
from sac.web import display, meterpage, settingspage
from sac.web.common import (
    COOKIE,
    LOGIN_COOKIE,
    BadRequest,
    Forbidden,
    Page,
    SignInRefused,
    arg,
    list_filter,
    page,
)
from sac.web.errors import install as install_errors
from sac.web.errors import is_api, secure
from sac.web.forms import MeterForm, parse_meter_form
from sac.web.staticfiles import STATIC, StaticFiles
from sac.web.uploads import Uploads

__all__ = ["RANGES", "SORTS", "STATIC", "Pages"]

SORTS = ("ldn", "pdr", "index", "diagnostic", "battery", "last_connection", "valve")
RANGES = {"7d": 7, "30d": 30, "90d": 90, "1y": 366}

# a path of this site and its query: unreserved, sub-delims, ":", "@", "/", "?", "#" and
# percent-escapes; no "//" or "/\\" at the start (another host), no space, no control
_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&()*+,;=:@/?%#]{0,2000}")


def _safe_next(target: str) -> str:
    """Where to go after sign-in: a path of this site only (no open redirect).  Only safe
    characters are accepted, and the target must stay a path of this site once its escapes
    are decoded too (``/%2F/host``, ``/%09/host``), with no ``.`` or ``..`` segment; anything
    else goes to the meter list."""
    if _NEXT.fullmatch(target):
        decoded = unquote(target)
        path = decoded.partition("?")[0].partition("#")[0]
        if (
            decoded.isprintable()
            and decoded.isascii()
            and "\\" not in decoded
            and not decoded.startswith("//")
            and not {".", ".."} & set(path.split("/"))
        ):
            return target
    return "/meters"


class Pages:
    """The pages' router; ``web`` is the :class:`sac.web.app.Web` they share."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.store = web.store
        self.registry = web.registry
        self.settings = web.settings
        self.uploads = Uploads()  # key CSVs checked, waiting for the operator's go

    @functools.cached_property
    def static_files(self) -> StaticFiles:
        return StaticFiles(STATIC)

    # --- sign-in ---------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def home(self, request: Any) -> bytes:
        return self.web.redirect(request, "/meters")

    @app.route("/login", methods=["GET"])
    def login_form(self, request: Any) -> bytes:
        return self._login_page(request, _safe_next(arg(request, "next", "/meters")))

    def _login_page(
        self, request: Any, target: str, error: str = "", name: str = "", status: int = 200
    ) -> bytes:
        token = secrets.token_urlsafe(32)
        self.web.cookie(request, LOGIN_COOKIE, token.encode(), 3600)
        return self.web.render(
            request, "login.html", status, csrf=token, next=target, error=error, username=name
        )

    @app.route("/login", methods=["POST"])
    async def login(self, request: Any) -> bytes:
        target = _safe_next(arg(request, "next", "/meters"))
        cookie = (request.getCookie(LOGIN_COOKIE) or b"").decode("ascii", "replace")
        if not cookie or not hmac.compare_digest(cookie.encode(), arg(request, "csrf").encode()):
            return self._login_page(
                request, target, "The sign-in form had expired; please try again.", status=403
            )
        name, password = arg(request, "username"), arg(request, "password")
        address = request.getClientAddress().host
        if not name or not password:
            return self._login_page(
                request, target, "Enter your user name and password.", name, 400
            )
        try:
            user = await self.web.check_password(name, password, address)
        except SignInRefused as refused:
            request.setHeader(b"Retry-After", str(refused.wait).encode())
            if refused.busy:
                error = "The SAC is busy signing others in; try again in a moment."
            else:
                minutes = math.ceil(refused.wait / 60)
                error = (
                    "Too many failed sign-ins from your address; try again in"
                    f" {minutes} minute{'s' if minutes > 1 else ''}."
                )
            return self._login_page(request, target, error, name, 429)
        if user is None:  # a wrong password, an unknown name, a locked user: one answer
            return self._login_page(request, target, "Wrong user name or password.", name, 403)
        token, _session = await self.store.sessions.create(
            user.name, self.settings.session_ttl, address, self.settings.session_lifetime
        )
        cookie_life = min(self.settings.session_ttl, self.settings.session_lifetime)
        self.web.cookie(request, COOKIE, token.encode(), int(cookie_life.total_seconds()))
        self.web.cookie(request, LOGIN_COOKIE, b"", 0)
        return self.web.redirect(request, target)

    @app.route("/logout", methods=["POST"])
    @page(Role.VIEWER)
    async def logout(self, request: Any, session: WebSession) -> Page:
        token = request.getCookie(COOKIE)
        if token:
            await self.store.sessions.end(token.decode("ascii"))
        await self.store.audit.record(self.web.actor(request, session), "sign-out")
        self.web.cookie(request, COOKIE, b"", 0)
        return Page(redirect="/login")

    # --- the meter list --------------------------------------------------------------------

    @app.route("/meters", methods=["GET"])
    @page(Role.VIEWER)
    async def meters(self, request: Any, session: WebSession) -> Page:
        now = self.web.now()
        sort = arg(request, "sort", "ldn")
        if sort not in SORTS:
            sort = "ldn"
        descending = arg(request, "dir") == "desc"
        size_text = arg(request, "size")
        size = (
            int(size_text)
            if size_text.isdigit() and int(size_text) in self.settings.page_sizes
            else self.settings.page_sizes[1]
        )
        filtered, filters = list_filter(request, now)
        query = dataclasses.replace(filtered, sort=sort, descending=descending)
        search, valve, alarms = filtered.search, filtered.valve, filtered.alarms
        after = arg(request, "after") or None
        try:
            page = await self.store.meters.page(after=after, limit=size, query=query)
        except ValueError:
            raise BadRequest(
                "that page link is not valid any more; start from the first page"
            ) from None
        total = page.total if page.total is not None else 0  # counted with the page
        if size != self.settings.page_sizes[1]:
            filters["size"] = str(size)
        unseen = int(filters["unseen"]) if "unseen" in filters else None

        def link(**change: str) -> str:
            params = {**filters, "sort": sort, "dir": "desc" if descending else "asc", **change}
            return "/meters?" + urlencode({k: v for k, v in params.items() if v})

        def sort_link(column: str) -> str:
            flip = "asc" if column != sort or descending else "desc"
            return "/meters?" + urlencode({**filters, "sort": column, "dir": flip})

        alarmed = await self.store.events.open_counts([m.ldn for m in page.meters])
        rows = [
            display.meter_row(self.registry, m, now, alarmed.get(m.ldn, 0)) for m in page.meters
        ]
        return Page(
            "meters.html",
            dict(
                rows=rows,
                total=total,
                sort=sort,
                descending=descending,
                search=search or "",
                valve=valve,
                alarms=alarms,
                unseen=unseen,
                size=size,
                sizes=self.settings.page_sizes,
                next_link=link(after=page.next_after) if page.next_after else None,
                first_link=link() if after else None,
                sort_link=sort_link,
                title="Meters",
            ),
        )

    # --- add a meter -----------------------------------------------------------------------

    def _profile_names(self) -> list[str]:
        return sorted(self.registry.profiles)

    @app.route("/meters/new", methods=["GET"])
    @page(Role.OPERATOR)
    async def new_meter_form(self, request: Any, session: WebSession) -> Page:
        values = {"profile": self.registry.default}
        return self._meter_form(MeterForm(values))

    def _meter_form(self, form: MeterForm, status: int = 200) -> Page:
        return Page(
            "meter_new.html",
            dict(form=form, profiles=self._profile_names(), title="Add a meter"),
            status,
        )

    @app.route("/meters/new", methods=["POST"])
    @page(Role.OPERATOR)
    async def add_meter(self, request: Any, session: WebSession) -> Page:
        fields = {
            k: arg(request, k)
            for k in (
                "ldn",
                "pdr",
                "system_title",
                "profile",
                "ek",
                "ak",
                "address",
                "allowed_ips",
                "poll_minutes",
            )
        }
        form = parse_meter_form(fields, self._profile_names())
        if form.meter is None or form.keys is None:
            return self._meter_form(form, 400)
        profile = self.registry.match(assigned=form.meter.profile)
        sap = int(profile.clients["management"])
        try:
            await self.store.meters.add(
                form.meter, self.web.actor(request, session), keys={sap: form.keys}
            )
        except Conflict as exc:
            where = "system_title" if "system" in str(exc).lower() else "ldn"
            form.errors[where] = (
                "Another meter has this system title."
                if where == "system_title"
                else "A meter with this LDN exists already."
            )
            return self._meter_form(form, 409)
        return Page(redirect=f"/meters/{quote(form.meter.ldn)}?added=1")

    # --- import keys -----------------------------------------------------------------------

    @app.route("/meters/import", methods=["GET"])
    @page(Role.OPERATOR)
    async def import_form(self, request: Any, session: WebSession) -> Page:
        return Page("import.html", dict(title="Import keys", stage="upload"))

    @app.route("/meters/import/sample.csv", methods=["GET"])
    @page(Role.VIEWER)
    async def import_sample(self, request: Any, session: WebSession) -> bytes:
        secure(request)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b'attachment; filename="sac-keys-sample.csv"')
        return SAMPLE.encode()

    @app.route("/meters/import", methods=["POST"])
    @page(Role.OPERATOR)
    async def import_keys(self, request: Any, session: WebSession) -> Page:
        now = self.web.now()
        self.uploads.forget_old(now)
        if arg(request, "step", "preview") != "confirm":
            return self.uploads.check(request, session.csrf, now, self.settings.max_upload)
        upload = self.uploads.take(arg(request, "upload"), session.csrf)
        replace = arg(request, "replace") == "1"
        try:
            count = await self.store.keys.import_rows(
                upload.rows, replace=replace, by=self.web.actor(request, session)
            )
        except KeyImportError as exc:
            return Page(
                "import.html",
                dict(
                    title="Import keys",
                    stage="refused",
                    name=upload.name,
                    errors=exc.errors,
                    rows=len(upload.rows),
                ),
                409,
            )
        return Page(
            "import.html", dict(title="Import keys", stage="done", name=upload.name, count=count)
        )

    # --- a meter ---------------------------------------------------------------------------

    @app.route("/meters/<string(length=16):ldn>", methods=["GET"])
    @page(Role.VIEWER)
    async def meter(self, request: Any, session: WebSession, ldn: str) -> Page:
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise NotFound()
        span = arg(request, "range", "30d")
        if span not in RANGES:
            span = "30d"
        values = await meterpage.gather(self.web, meter, session, RANGES[span], self.web.now())
        return Page(
            "meter.html",
            dict(
                title=f"Meter {ldn}",
                **values,
                span=span,
                ranges=list(RANGES),
                added=arg(request, "added") == "1",
                queued=arg(request, "queued"),
                open_states=("pending", "sent"),
                counters_reset=arg(request, "counters") == "reset",
            ),
        )

    @app.route("/meters/<string(length=16):ldn>/counters/reset", methods=["POST"])
    @page(Role.ADMIN)
    async def reset_counters(self, request: Any, session: WebSession, ldn: str) -> Page:
        """After the meter's keys were changed in the field (by its installer's tool): the
        SAC's counters for it start again from 0.  Audited."""
        if arg(request, "confirm") != ldn:
            raise BadRequest("the confirmation does not name this meter")
        await self.store.counters.reset(ldn, self.web.actor(request, session))
        return Page(redirect=f"/meters/{quote(ldn)}?counters=reset#counters")

    # --- the valve -------------------------------------------------------------------------

    _VALVE_ACTIONS: Mapping[str, tuple[str, str]] = {
        "close": ("valve-close", "Close the valve"),
        "enable-opening": ("valve-enable-opening", "Enable opening"),
    }

    async def _valve_target(self, request: Any, ldn: str) -> tuple[str, Any]:
        """(the action asked for, the meter) of a valve page; 400 or 404 otherwise."""
        action = arg(request, "action")
        if action not in self._VALVE_ACTIONS:
            raise BadRequest("the valve action is close or enable-opening")
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise NotFound()
        return action, meter

    @app.route("/meters/<string(length=16):ldn>/valve", methods=["GET"])
    @page(Role.OPERATOR)
    async def valve_confirm(self, request: Any, session: WebSession, ldn: str) -> Page:
        action, meter = await self._valve_target(request, ldn)
        return Page(
            "valve_confirm.html",
            dict(
                title=self._VALVE_ACTIONS[action][1],
                m=meter,
                action=action,
                label=self._VALVE_ACTIONS[action][1],
                valve=display.valve_name(meter.valve_state),
            ),
        )

    @app.route("/meters/<string(length=16):ldn>/valve", methods=["POST"])
    @page(Role.OPERATOR)
    async def valve(self, request: Any, session: WebSession, ldn: str) -> Page:
        action, meter = await self._valve_target(request, ldn)
        if arg(request, "confirm") != ldn:
            raise BadRequest("the confirmation does not name this meter")
        profile = self.registry.match(assigned=meter.profile)
        command = await command_service.queue(
            self.store,
            profile,
            ldn,
            self._VALVE_ACTIONS[action][0],
            {},
            self.web.actor(request, session),
            now=self.web.now(),
        )
        return Page(redirect=f"/meters/{quote(ldn)}?queued={command.id}#commands")

    # --- its settings (sac.web.settingspage) --------------------------------------------------

    @app.route("/meters/<string(length=16):ldn>/settings", methods=["GET"])
    @page(Role.VIEWER)
    async def meter_settings(self, request: Any, session: WebSession, ldn: str) -> Page:
        return await settingspage.show(self, request, ldn)

    @app.route("/meters/<string(length=16):ldn>/settings/read", methods=["POST"])
    @page(Role.OPERATOR)
    async def read_settings(self, request: Any, session: WebSession, ldn: str) -> Page:
        return await settingspage.queue_reads(self, request, session, ldn)

    @app.route("/meters/<string(length=16):ldn>/settings/edit", methods=["POST"])
    @page(Role.OPERATOR)
    async def edit_setting(self, request: Any, session: WebSession, ldn: str) -> Page:
        return await settingspage.confirm_change(self, request, session, ldn)

    @app.route("/meters/<string(length=16):ldn>/settings/write", methods=["POST"])
    @page(Role.OPERATOR)
    async def write_setting(self, request: Any, session: WebSession, ldn: str) -> Page:
        return await settingspage.write(self, request, session, ldn)

    @app.route("/commands/<int:command_id>.json", methods=["GET"])
    @page(Role.VIEWER)
    async def command_state(self, request: Any, session: WebSession, command_id: int) -> bytes:
        command = await self.store.commands.get(command_id)
        valve = valve_state = None
        if command.kind.startswith("valve-"):
            meter = await self.store.meters.get(command.ldn)
            if meter is not None:
                valve, valve_state = display.valve_name(meter.valve_state), meter.valve_state
        secure(request)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(
            {
                "valve": valve,
                "valve_state": valve_state,
                "id": command.id,
                "ldn": command.ldn,
                "kind": command.kind,
                "state": command.state.value,
                "result": command.result,
                "final": command.state not in (CommandState.PENDING, CommandState.SENT),
                "updated": display.local_time(
                    command.finished or command.sent or command.created, seconds=True
                ),
            }
        ).encode()

    # --- status and metrics ----------------------------------------------------------------

    def _components(self) -> list[tuple[str, bool, str]]:
        components = []
        for name, check in sorted(self.web.health.items()):
            try:
                ok, detail = check()
            except Exception as exc:  # a failing check is itself a finding
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            components.append((name, ok, detail))
        return components

    @app.route("/health", methods=["GET"])
    def health_check(self, request: Any) -> bytes:
        """For load balancers and service monitors, without sign-in: 200 when every part is
        well, else 503; names and yes/no only (the details are on /status)."""
        components = self._components()
        healthy = all(ok for _, ok, _ in components)
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        answer = {"ok": healthy, "components": {name: ok for name, ok, _ in components}}
        return json.dumps(answer).encode()

    @app.route("/status", methods=["GET"])
    @page(Role.VIEWER)
    async def status(self, request: Any, session: WebSession) -> Page:
        now = self.web.now()
        components = self._components()
        reasons: dict[str, int] = {}
        for metric in ("sac_push_rejected_total", "sac_push_closed_total"):
            for labels, value in self.web.metrics.samples(metric):
                if value:
                    reasons[labels["reason"]] = reasons.get(labels["reason"], 0) + int(value)
        return Page(
            "status.html",
            dict(
                title="Status",
                components=components,
                hour=await self.store.meters.heard_since(now - dt.timedelta(hours=1)),
                day=await self.store.meters.heard_since(now - dt.timedelta(days=1)),
                meters=await self.store.meters.count(),
                pending=len(await self.store.commands.recent(None, [CommandState.PENDING], 1000)),
                reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
                stored=int(self.web.metrics.total("sac_push_stored_total")),
                spooled=int(self.web.metrics.total("sac_push_spooled_total")),
                spool=self.web.metrics.reading("sac_spool_depth"),
                up=display.ago(self.web.started, now).replace(" ago", ""),
                started=display.local_time(self.web.started),
            ),
        )

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: Any) -> bytes:
        if not self.settings.metrics_public and await self.web.session(request) is None:
            raise Forbidden("sign in to read the metrics")
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
        return self.web.metrics.render()

    @app.route("/static/", branch=True)
    def static(self, request: Any) -> Any:
        return self.static_files

    install_errors(app, lambda pages: pages.web.render, is_api)
