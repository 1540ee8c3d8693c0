"""The web application: what its parts share, and the small root router that mounts them.

Seven routers, each a Klein app of its own module, mounted here with ``branch=True``:

* the operators' pages at ``/`` (:mod:`sac.web.pages`): sign-in, meters, keys, valve,
  status and metrics;
* the admins' pages at ``/admin`` (:mod:`sac.web.admin`);
* the alarms page at ``/alarms`` (:mod:`sac.web.alarms`);
* the jobs' pages at ``/jobs`` (:mod:`sac.web.jobpages`): one command for many meters;
* the JSON API at ``/api/v1`` (:mod:`sac.web.api`), with bearer tokens, its jobs at
  ``/api/v1/jobs`` (:mod:`sac.web.api_jobs`);
* SOAP at ``/soap`` (:mod:`sac.web.soap`).

:class:`Web` is not a router: it holds what the parts share -- the store, the profiles, the
settings, the Jinja2 templates, the sessions and the sign-in throttle -- and each router gets
it as ``web``.  What goes wrong in any of them is answered by the one error map,
:mod:`sac.web.errors`.  Every page but the sign-in, the static files and ``/metrics`` needs a
signed-in user; the session is a random token in an HttpOnly, SameSite=Strict cookie (Secure
unless the SAC is configured for plain HTTP), of which the store keeps only a hash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein

from sac.profiles import ProfileRegistry
from sac.services.jobs import Jobs
from sac.services.metrics import Metrics
from sac.store import Actor, Role, User, WebSession
from sac.store.connector import IStore
from sac.web import display
from sac.web.admin import AdminPages
from sac.web.alarms import AlarmPages
from sac.web.api import MAX_BODY as API_MAX_BODY
from sac.web.api import JsonApi
from sac.web.api_jobs import JobsApi
from sac.web.bodies import FORM_BODY, BoundedRequest
from sac.web.common import SignInRefused, WebSettings
from sac.web.errors import install as install_errors
from sac.web.errors import is_api, secure
from sac.web.jobpages import JobPages
from sac.web.listener import WebLimits, WebSite
from sac.web.pages import RANGES, SORTS, STATIC, Pages
from sac.web.soap import SoapApi
from sac.web.spyne_compat import DEFAULT_MAX_BODY as SOAP_MAX_BODY
from sac.web.throttle import SignInThrottle

__all__ = ["RANGES", "SORTS", "STATIC", "Web", "WebSettings", "route_rules"]

COOKIE = b"sac_session"
UPLOADS = (b"/meters/import", b"/jobs")  # the routes whose POST may carry a file
PACKAGE = Path(__file__).resolve().parent
# templates/ of the source tree, shipped in a wheel as sac/templates (setup.py)
TEMPLATES = next(
    p for p in (PACKAGE.parent / "templates", PACKAGE.parents[1] / "templates") if p.is_dir()
)

# where each router is mounted ("": the root, its paths as they are)
MOUNTS: tuple[tuple[str, Any], ...] = (
    ("/api/v1/jobs", JobsApi),
    ("/api/v1", JsonApi),
    ("/soap", SoapApi),
    ("/admin", AdminPages),
    ("/alarms", AlarmPages),
    ("/jobs", JobPages),
    ("", Pages),
)


class RouteRule(NamedTuple):
    """A route of the whole site: its full path rule and methods (None: any)."""

    rule: str
    methods: frozenset[str] | None


def route_rules() -> Iterator[RouteRule]:
    """Every route of every router, by its full path (for the tests that check that each
    has an access policy, a crawl and an OpenAPI operation)."""
    for prefix, router in MOUNTS:
        for rule in router.app.url_map.iter_rules():
            path = prefix if prefix and rule.rule == "/" else prefix + rule.rule
            yield RouteRule(path, frozenset(rule.methods) if rule.methods else None)


class Web:
    """The application's shared parts, and the root router mounting its five routers."""

    app = Klein()

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
        self.jinja = _templates(templates, self.settings.name)
        self.jobs = Jobs(store, registry, now=now)  # one command for many meters
        self.mounted = {prefix: router(self).app.resource() for prefix, router in MOUNTS}

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

    # --- the root router: one branch per part ---------------------------------------------

    @app.route("/api/v1/jobs", branch=True)
    def api_jobs(self, request: Any) -> Any:
        return _branch(request, self.mounted["/api/v1/jobs"])

    @app.route("/api/v1", branch=True)
    def api(self, request: Any) -> Any:
        return _branch(request, self.mounted["/api/v1"])

    @app.route("/soap", branch=True)
    def soap(self, request: Any) -> Any:
        return _branch(request, self.mounted["/soap"])

    @app.route("/admin", branch=True)
    def admin(self, request: Any) -> Any:
        return _branch(request, self.mounted["/admin"])

    @app.route("/alarms", branch=True)
    def alarms(self, request: Any) -> Any:
        return _branch(request, self.mounted["/alarms"])

    @app.route("/jobs", branch=True)
    def job_pages(self, request: Any) -> Any:
        return _branch(request, self.mounted["/jobs"])

    @app.route("/", branch=True)
    def pages(self, request: Any) -> Any:
        return _branch(request, self.mounted[""])

    install_errors(app, lambda web: web.render, is_api)

    # --- request bodies (sac.web.bodies) -------------------------------------------------

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
        """A key CSV (``/meters/import``) or a job's LDN CSV (``/jobs``)."""
        return method.upper() == b"POST" and path.rstrip(b"/") in UPLOADS

    async def may_upload(self, request: Any) -> tuple[int, str, bytes] | None:
        """Whether an upload may be read, from its headers: None (yes), or the answer --
        303 to the sign-in without a session, 403 below the operator's role."""
        session = await self.session(request)
        if session is None:
            path = getattr(request.channel, "_path", b"").split(b"?", 1)[0].rstrip(b"/")
            back = path if path in UPLOADS else b"/meters/import"
            return (303, "sign in first\n", b"/login?next=" + back.replace(b"/", b"%2F"))
        if not session.user.role.may(Role.OPERATOR):
            return (403, f"this needs the {Role.OPERATOR.value} role\n", b"")
        return None

    # --- answers ---------------------------------------------------------------------------

    def render(self, request: Any, template: str, status: int = 200, **values: Any) -> bytes:
        secure(request)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self.jinja.get_template(template).render(**values).encode()

    def redirect(self, request: Any, to: str) -> bytes:
        secure(request)
        request.setResponseCode(303)
        request.setHeader(b"Location", to.encode())
        return b""

    def cookie(self, request: Any, name: bytes, value: bytes, max_age: int | None) -> None:
        request.addCookie(
            name,
            value,
            path=b"/",
            max_age=str(max_age).encode() if max_age is not None else None,
            httpOnly=True,
            secure=self.settings.secure_cookies,
            sameSite="strict",
        )

    # --- who asks --------------------------------------------------------------------------

    def actor(self, request: Any, session: WebSession) -> Actor:
        return Actor(session.user.name, request.getClientAddress().host)

    async def session(self, request: Any) -> WebSession | None:
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


def _branch(request: Any, resource: Any) -> Any:
    """The router of a branch, the request's path as it sees it: ``/`` for the branch's
    own path (``/soap``), which a router would otherwise redirect to ``/soap/``."""
    if not request.postpath:
        request.postpath = [b""]
    return resource


def _templates(folder: Path, name: str) -> Environment:
    jinja = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    jinja.filters.update(
        quantity=display.quantity,
        battery=display.battery,
        valve=display.valve_name,
        local=display.local_time,
        unit=display.unit_name,
    )
    jinja.globals.update(name=name)
    return jinja
