"""The operators' web application: Klein routes, Jinja2 pages, sign-in, roles and CSRF.

Every page but the sign-in, the static files and ``/metrics`` needs a signed-in user; the
session is a random token in an HttpOnly, SameSite=Strict cookie (Secure unless the SAC is
configured for plain HTTP), of which the store keeps only a hash.  Every form carries the
session's CSRF token; a POST without the right one is refused before anything is read.
Roles: viewers read, operators add meters, import keys and queue commands, admins manage
users.  Every change goes through the store with the user as the audit trail's actor.
One error handler turns any exception into a plain page: no traceback reaches a browser.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import json
import math
import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException, NotFound

from sac.errors import Conflict, KeyImportError, SacError
from sac.profiles import ProfileRegistry
from sac.services import commands as command_service
from sac.services.metrics import Metrics
from sac.services.readings import INDEX, INDEX_UNDER_ALARM
from sac.store import (
    Actor,
    CommandState,
    MeterQuery,
    Role,
    UnknownCommand,
    UnknownMeter,
    User,
    WebSession,
)
from sac.store.connector import IStore
from sac.store.keycsv import SAMPLE, parse_key_csv
from sac.web import chart, display
from sac.web.admin import AdminPages
from sac.web.api import MAX_BODY as API_MAX_BODY
from sac.web.api import ApiRoutes
from sac.web.bodies import FORM_BODY, BoundedRequest
from sac.web.common import (
    BadRequest,
    CsrfError,
    Forbidden,
    Page,
    SignInRefused,
    WebSettings,
    arg,
    page,
    routes,
)
from sac.web.forms import MeterForm, parse_meter_form
from sac.web.listener import WebLimits, WebSite
from sac.web.soap import SoapRoutes
from sac.web.spyne_compat import DEFAULT_MAX_BODY as SOAP_MAX_BODY
from sac.web.throttle import SignInThrottle

__all__ = ["Web", "WebSettings"]

COOKIE = b"sac_session"
LOGIN_COOKIE = b"sac_login"  # the sign-in form's CSRF token, before there is a session
PACKAGE = Path(__file__).resolve().parent
# templates/ of the source tree, shipped in a wheel as sac/templates (setup.py)
TEMPLATES = next(
    p for p in (PACKAGE.parent / "templates", PACKAGE.parents[1] / "templates") if p.is_dir()
)
STATIC = PACKAGE / "static"
SORTS = ("ldn", "pdr", "index", "diagnostic", "battery", "last_connection", "valve")
RANGES = {"7d": 7, "30d": 30, "90d": 90, "1y": 366}


@dataclass(slots=True)
class _Upload:
    """A key CSV checked and waiting for the operator's go: only the session that sent it
    may import it, for 30 minutes."""

    csrf: str
    name: str
    rows: list[Any]
    until: dt.datetime


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


class Web(AdminPages, ApiRoutes, SoapRoutes):
    app = routes
    log = Logger()

    def __init__(
        self,
        store: IStore,
        registry: ProfileRegistry,
        *,
        metrics: Metrics | None = None,
        settings: WebSettings | None = None,
        health: Mapping[str, Callable[[], tuple[bool, str]]] | None = None,
        configuration: Sequence[tuple[str, str, str]] = (),
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        templates: Path = TEMPLATES,
    ) -> None:
        self.store = store
        self.registry = registry
        self.metrics = metrics if metrics is not None else Metrics()
        self.settings = settings or WebSettings()
        self.health = dict(health or {})
        self.configuration = list(configuration)  # (setting, value, source), no secrets
        self.now = now
        self.started = now()
        # failed sign-ins by client address (pages and SOAP); the store locks users out
        self.sign_ins = SignInThrottle(
            self.settings.sign_in_failures, clock=lambda: self.now().timestamp()
        )
        self.checks_running = 0  # password checks under way (at most password_checks)
        self._uploads: OrderedDict[str, _Upload] = OrderedDict()
        self.jinja = Environment(
            loader=FileSystemLoader(str(templates)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.jinja.filters.update(
            quantity=display.quantity,
            battery=display.battery,
            valve=display.valve_name,
            local=display.local_time,
            unit=display.unit_name,
        )
        self.jinja.globals.update(name=self.settings.name)

    def resource(self) -> Any:
        return self.app.resource()

    def site(self, limits: WebLimits | None = None, *, reactor: Any = None) -> WebSite:
        """The HTTP site to listen with: its connections held to ``limits``
        (:mod:`sac.web.listener`), its requests' bodies bounded before they are read
        (:mod:`sac.web.bodies`)."""
        return WebSite(
            self.resource(),
            limits or WebLimits(),
            self.metrics,
            reactor=reactor,
            request_factory=BoundedRequest.bound(self),
        )

    def body_limit(self, method: bytes, path: bytes) -> int:
        """The most bytes of a request body to ``path``: SOAP and the JSON API take theirs,
        the key CSV upload its file and envelope, any other route a form's."""
        if path == b"/soap" or path.startswith(b"/soap/"):
            return SOAP_MAX_BODY
        if path.startswith(b"/api/"):
            return API_MAX_BODY
        if self.is_upload(method, path):
            return self.settings.max_upload + FORM_BODY
        return FORM_BODY

    def is_upload(self, method: bytes, path: bytes) -> bool:
        return method.upper() == b"POST" and path.rstrip(b"/") == b"/meters/import"

    async def may_upload(self, request: Any) -> tuple[int, str, bytes] | None:
        """Whether an upload may be read, from its headers: None (yes), or the answer --
        303 to the sign-in without a session, 403 below the operator's role."""
        session = await self._session(request)
        if session is None:
            return (303, "sign in first\n", b"/login?next=%2Fmeters%2Fimport")
        if not session.user.role.may(Role.OPERATOR):
            return (403, f"this needs the {Role.OPERATOR.value} role\n", b"")
        return None

    # --- plumbing --------------------------------------------------------------------------

    def _headers(self, request: Any) -> None:
        for name, value in (
            (b"Content-Security-Policy", b"default-src 'self'; frame-ancestors 'none'"),
            (b"X-Content-Type-Options", b"nosniff"),
            (b"X-Frame-Options", b"DENY"),
            (b"Referrer-Policy", b"same-origin"),
            (b"Cache-Control", b"no-store"),
        ):
            request.setHeader(name, value)

    def render(self, request: Any, template: str, status: int = 200, **values: Any) -> bytes:
        self._headers(request)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self.jinja.get_template(template).render(**values).encode()

    def _redirect(self, request: Any, to: str) -> bytes:
        self._headers(request)
        request.setResponseCode(303)
        request.setHeader(b"Location", to.encode())
        return b""

    def _cookie(self, request: Any, name: bytes, value: bytes, max_age: int | None) -> None:
        request.addCookie(
            name,
            value,
            path=b"/",
            max_age=str(max_age).encode() if max_age is not None else None,
            httpOnly=True,
            secure=self.settings.secure_cookies,
            sameSite="strict",
        )

    def _actor(self, request: Any, session: WebSession) -> Actor:
        return Actor(session.user.name, request.getClientAddress().host)

    async def _session(self, request: Any) -> WebSession | None:
        token = request.getCookie(COOKIE)
        if not token:
            return None
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        return await self.store.sessions.get(
            text, ttl=self.settings.session_ttl, lifetime=self.settings.session_lifetime
        )

    # --- errors ----------------------------------------------------------------------------

    @app.handle_errors(NotFound)
    def not_found(self, request: Any, failure: Any) -> bytes:
        if self._is_api(request):
            return self._api_error(request, 404, "not_found", "there is no such route")
        return self.render(
            request,
            "error.html",
            404,
            title="Not found",
            message=("There is no such page or meter."),
        )

    @app.handle_errors(Forbidden)
    def forbidden(self, request: Any, failure: Any) -> bytes:
        if self._is_api(request):
            return self._api_error(request, 403, "forbidden", str(failure.value))
        return self.render(
            request,
            "error.html",
            403,
            title="Not allowed",
            message=f"Your role does not allow this: {failure.value}.",
        )

    @app.handle_errors(CsrfError)
    def stale_form(self, request: Any, failure: Any) -> bytes:
        return self.render(
            request,
            "error.html",
            403,
            title="Form expired",
            message=(
                "The form was stale or did not come from this site. Go back, reload the page "
                "and try again."
            ),
        )

    @app.handle_errors(BadRequest)
    def bad_request(self, request: Any, failure: Any) -> bytes:
        if self._is_api(request):
            return self._api_error(request, 400, "bad_request", str(failure.value))
        return self.render(
            request, "error.html", 400, title="Bad request", message=str(failure.value)
        )

    @app.handle_errors(HTTPException)
    def http_error(self, request: Any, failure: Any) -> bytes:
        exc = failure.value
        if self._is_api(request):  # 405 (with Allow), 308 (with Location) ...
            headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
            code = (exc.name or "error").lower().replace(" ", "_")
            message = exc.description or exc.name or ""
            if "Allow" in headers:
                method = request.method.decode("latin-1")
                message = f"{method} is not allowed here; allowed: {headers['Allow']}"
            return self._api_error(request, exc.code or 500, code, message, headers=headers)
        return self.render(
            request, "error.html", exc.code or 500, title=exc.name, message=exc.description or ""
        )

    @app.handle_errors(Exception)
    def crashed(self, request: Any, failure: Any) -> bytes:
        incident = uuid.uuid4().hex[:12]
        self.log.failure(
            "web: {method} {uri} failed (incident {incident})",
            failure,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            incident=incident,
        )
        if self._is_api(request):
            return self._api_error(
                request,
                500,
                "internal",
                f"the SAC could not do this; the problem is logged as incident {incident}",
            )
        return self.render(
            request,
            "error.html",
            500,
            title="Something went wrong",
            message=(f"The SAC could not do this. The problem is logged as incident {incident}."),
        )

    # --- sign-in ---------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def home(self, request: Any) -> bytes:
        return self._redirect(request, "/meters")

    @app.route("/login", methods=["GET"])
    def login_form(self, request: Any) -> bytes:
        return self._login_page(request, _safe_next(arg(request, "next", "/meters")))

    def _login_page(
        self, request: Any, target: str, error: str = "", name: str = "", status: int = 200
    ) -> bytes:
        token = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, token.encode(), 3600)
        return self.render(
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
            user = await self.check_password(name, password, address)
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
        self._cookie(request, COOKIE, token.encode(), int(cookie_life.total_seconds()))
        self._cookie(request, LOGIN_COOKIE, b"", 0)
        return self._redirect(request, target)

    async def check_password(self, name: str, password: str, address: str) -> User | None:
        """The user signing in (pages and SOAP), or None: one answer for a wrong password,
        an unknown name and a locked user.  Before any password is checked the attempt is
        reserved for ``address`` (:class:`SignInThrottle`, attempts under way counted) and a
        place taken among the ``password_checks`` this process may run at once; SignInRefused
        when either is full (no check then).  ``sac_password_checks_total`` counts the
        checks made (the store makes exactly one scrypt check per call, a decoy's for an
        unknown or locked user), ``sac_sign_in_refused_total`` and ``sac_sign_in_busy_total``
        the refusals."""
        wait = self.sign_ins.reserve(address)
        if wait:
            self.metrics.count("sac_sign_in_refused_total")
            raise SignInRefused(wait, busy=False)
        if self.checks_running >= self.settings.password_checks:
            self.sign_ins.release(address, failed=False)
            self.metrics.count("sac_sign_in_busy_total")
            raise SignInRefused(1, busy=True)
        self.checks_running += 1
        failed = False
        try:
            user = await self.store.users.authenticate(name, password, address)
            self.metrics.count("sac_password_checks_total")
            failed = user is None
        finally:
            self.checks_running -= 1
            self.sign_ins.release(address, failed)  # a store that failed counts no failure
        return user

    @app.route("/logout", methods=["POST"])
    @page(Role.VIEWER)
    async def logout(self, request: Any, session: WebSession) -> Page:
        token = request.getCookie(COOKIE)
        if token:
            await self.store.sessions.end(token.decode("ascii"))
        await self.store.audit.record(self._actor(request, session), "sign-out")
        self._cookie(request, COOKIE, b"", 0)
        return Page(redirect="/login")

    # --- the meter list --------------------------------------------------------------------

    @app.route("/meters", methods=["GET"])
    @page(Role.VIEWER)
    async def meters(self, request: Any, session: WebSession) -> Page:
        now = self.now()
        sort = arg(request, "sort", "ldn")
        if sort not in SORTS:
            sort = "ldn"
        descending = arg(request, "dir") == "desc"
        valve_text = arg(request, "valve")
        valve = int(valve_text) if valve_text in ("0", "1", "2") else None
        alarms = arg(request, "alarms") == "1"
        unseen_text = arg(request, "unseen")
        unseen = (
            int(unseen_text) if unseen_text.isdigit() and 0 < int(unseen_text) < 10000 else None
        )
        search = arg(request, "q")[:32] or None
        size_text = arg(request, "size")
        size = (
            int(size_text)
            if size_text.isdigit() and int(size_text) in self.settings.page_sizes
            else self.settings.page_sizes[1]
        )
        query = MeterQuery(
            search=search,
            valve=valve,
            alarms=alarms,
            unseen_since=(now - dt.timedelta(days=unseen)).replace(second=0, microsecond=0)
            if unseen
            else None,
            sort=sort,
            descending=descending,
        )
        after = arg(request, "after") or None
        try:
            page = await self.store.meters.page(after=after, limit=size, query=query)
        except ValueError:
            raise BadRequest(
                "that page link is not valid any more; start from the first page"
            ) from None
        total = page.total if page.total is not None else 0  # counted with the page
        filters = {
            k: v
            for k, v in (
                ("q", search or ""),
                ("valve", "" if valve is None else str(valve)),
                ("alarms", "1" if alarms else ""),
                ("unseen", str(unseen) if unseen else ""),
                ("size", str(size) if size != self.settings.page_sizes[1] else ""),
            )
            if v
        }

        def link(**change: str) -> str:
            params = {**filters, "sort": sort, "dir": "desc" if descending else "asc", **change}
            return "/meters?" + urlencode({k: v for k, v in params.items() if v})

        def sort_link(column: str) -> str:
            flip = "asc" if column != sort or descending else "desc"
            return "/meters?" + urlencode({**filters, "sort": column, "dir": flip})

        rows = [self._row(m, now) for m in page.meters]
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

    def _bits(self, profile_name: str) -> Mapping[int, str]:
        try:
            profile = self.registry.match(assigned=profile_name)
        except SacError:
            return {}
        return getattr(profile, "diagnostic_bits", {}) or {}

    def _row(self, m: Any, now: dt.datetime) -> dict[str, Any]:
        bits = self._bits(m.profile)
        return dict(
            ldn=m.ldn,
            pdr=m.pdr or "",
            index=display.quantity(m.index_value, m.index_scaler, m.index_unit),
            diagnostic=display.diagnostic(m.diagnostic, bits),
            alarm=bool(m.diagnostic),
            battery=display.battery(m.battery_value, m.battery_unit),
            last=display.local_time(m.last_connection),
            ago=display.ago(m.last_connection, now),
            valve=display.valve_name(m.valve_state),
            valve_state=m.valve_state,
            disabled=m.state.value != "active",
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
                form.meter, self._actor(request, session), keys={sap: form.keys}
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
        self._headers(request)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b'attachment; filename="sac-keys-sample.csv"')
        return SAMPLE.encode()

    def _forget_old_uploads(self, now: dt.datetime) -> None:
        for key in [k for k, u in self._uploads.items() if u.until <= now]:
            del self._uploads[key]
        while len(self._uploads) > 20:
            self._uploads.popitem(last=False)

    @app.route("/meters/import", methods=["POST"])
    @page(Role.OPERATOR)
    async def import_keys(self, request: Any, session: WebSession) -> Page:
        now = self.now()
        self._forget_old_uploads(now)
        step = arg(request, "step", "preview")
        replace = arg(request, "replace") == "1"
        if step == "confirm":
            key = arg(request, "upload")
            upload = self._uploads.get(key)
            if upload is None or upload.csrf != session.csrf:  # another session's: left alone
                raise BadRequest("this upload is not waiting any more; upload the file again")
            del self._uploads[key]
            try:
                count = await self.store.keys.import_rows(
                    upload.rows, replace=replace, by=self._actor(request, session)
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
                "import.html",
                dict(title="Import keys", stage="done", name=upload.name, count=count),
            )
        content = (request.args.get(b"file") or [b""])[0]
        if not content:
            return Page(
                "import.html",
                dict(title="Import keys", stage="upload", error="Choose a CSV file to upload."),
                400,
            )
        if len(content) > self.settings.max_upload:
            return Page(
                "import.html",
                dict(
                    title="Import keys",
                    stage="upload",
                    error=f"The file is larger than {self.settings.max_upload // 2**20} MB.",
                ),
                413,
            )
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return Page(
                "import.html",
                dict(
                    title="Import keys",
                    stage="upload",
                    error="The file is not UTF-8 text: save it as CSV UTF-8 and try again.",
                ),
                400,
            )
        name = arg(request, "filename") or "keys.csv"
        rows, errors = parse_key_csv(text)
        if errors:
            return Page(
                "import.html",
                dict(
                    title="Import keys",
                    stage="errors",
                    name=name,
                    errors=errors,
                    rows=len(rows) + len(errors),
                ),
                422,
            )
        upload_id = secrets.token_urlsafe(16)
        self._uploads[upload_id] = _Upload(session.csrf, name, rows, now + dt.timedelta(minutes=30))
        return Page(
            "import.html",
            dict(
                title="Import keys",
                stage="preview",
                name=name,
                upload=upload_id,
                count=len(rows),
                sample=rows[:20],
            ),
        )

    # --- a meter ---------------------------------------------------------------------------

    @app.route("/meters/<string(length=16):ldn>", methods=["GET"])
    @page(Role.VIEWER)
    async def meter(self, request: Any, session: WebSession, ldn: str) -> Page:
        meter = await self.store.meters.get(ldn)
        if meter is None:
            raise NotFound()
        now = self.now()
        span = arg(request, "range", "30d")
        if span not in RANGES:
            span = "30d"
        start = now - dt.timedelta(days=RANGES[span])
        end = now + dt.timedelta(days=1)  # a meter whose clock runs ahead is still drawn
        # the database thins the range: the last index of each pixel column (the index only
        # rises, so that draws the same line as every reading) and of each local day
        width = max(60, -(-(end - start) // dt.timedelta(seconds=1) // chart.COLUMNS))
        try:
            line = await self.store.readings.buckets(ldn, INDEX, 2, start, end, width)
            days = await self.store.readings.buckets(ldn, INDEX, 2, start, end, 86400, chart.ROME)
            history = await self.store.readings.between(ldn, INDEX, 2, start, end, 200)
            alarm_index = await self.store.readings.last(ldn, INDEX_UNDER_ALARM, 2, 1)
        except UnknownMeter:
            raise NotFound() from None
        events = await self.store.events.latest(ldn, 50)
        commands = await self.store.commands.recent(ldn, None, 30)
        counters = None
        if session.user.role.may(Role.ADMIN):
            sap = int(self.registry.match(assigned=meter.profile).clients["management"])
            counters = await self.store.counters.state(ldn, sap)
        bits = self._bits(meter.profile)
        unit = display.unit_name(meter.index_unit)
        points = chart.points(line.readings)
        daily = chart.daily_consumption(chart.points(days.readings))
        return Page(
            "meter.html",
            dict(
                title=f"Meter {ldn}",
                m=meter,
                row=self._row(meter, now),
                system_title=meter.system_title.hex().upper() if meter.system_title else "",
                alarm_index=alarm_index[0] if alarm_index else None,
                diagnostic_flags=display.diagnostic_flags(meter.diagnostic, bits),
                history=list(reversed(history)),
                history_count=line.total,
                index_chart=chart.svg_line(points, f"Converted-volume index of {ldn}", unit),
                daily_chart=chart.svg_bars(daily, f"Daily consumption of {ldn}", unit),
                daily=daily[-14:],
                events=events,
                commands=commands,
                span=span,
                ranges=list(RANGES),
                added=arg(request, "added") == "1",
                queued=arg(request, "queued"),
                open_states=("pending", "sent"),
                counters=counters,
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
        try:
            await self.store.counters.reset(ldn, self._actor(request, session))
        except UnknownMeter:
            raise NotFound() from None
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
            self._actor(request, session),
            now=self.now(),
        )
        return Page(redirect=f"/meters/{quote(ldn)}?queued={command.id}#commands")

    @app.route("/commands/<int:command_id>.json", methods=["GET"])
    @page(Role.VIEWER)
    async def command_state(self, request: Any, session: WebSession, command_id: int) -> bytes:
        try:
            command = await self.store.commands.get(command_id)
        except UnknownCommand:
            raise NotFound() from None
        valve = valve_state = None
        if command.kind.startswith("valve-"):
            meter = await self.store.meters.get(command.ldn)
            if meter is not None:
                valve, valve_state = display.valve_name(meter.valve_state), meter.valve_state
        self._headers(request)
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
        for name, check in sorted(self.health.items()):
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
        now = self.now()
        components = self._components()
        reasons: dict[str, int] = {}
        for (metric, labels), value in self.metrics.counters.items():
            if metric in ("sac_push_rejected_total", "sac_push_closed_total") and value:
                reason = dict(labels).get("reason", "?")
                reasons[reason] = reasons.get(reason, 0) + value
        spool = self.metrics.gauges.get("sac_spool_depth")
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
                stored=self.metrics.total("sac_push_stored_total"),
                spooled=self.metrics.total("sac_push_spooled_total"),
                spool=spool() if spool is not None else None,
                up=display.ago(self.started, now).replace(" ago", ""),
                started=display.local_time(self.started),
            ),
        )

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: Any) -> bytes:
        if not self.settings.metrics_public and await self._session(request) is None:
            raise Forbidden("sign in to read the metrics")
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.metrics.render().encode()

    @app.route("/static/", branch=True)
    def static(self, request: Any) -> Any:
        return self._static

    @functools.cached_property
    def _static(self) -> _StaticFiles:
        return _StaticFiles(STATIC)


# the static files' types (Twisted's own File resource is not used: its module logs
# deprecation warnings when imported, and it lists directories)
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


class _StaticFiles(Resource):
    """The pages' few static files, read once and served with their type and a cache
    lifetime; any other path (a directory, a dot segment, a missing file) is a 404."""

    isLeaf = True

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.files = {
            entry.name: (entry.read_bytes(), _STATIC_TYPES[entry.suffix])
            for entry in folder.iterdir()
            if entry.is_file() and entry.suffix in _STATIC_TYPES
        }

    def render_GET(self, request: Any) -> bytes:
        name = b"/".join(request.postpath).decode("utf-8", "replace")
        found = self.files.get(name)
        if found is None:
            return notFound().render(request)
        body, kind = found
        request.setHeader(b"content-type", kind.encode())
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return body
