"""What the pages' routers share: the settings, the ``page`` guard (sign-in, role, CSRF),
what a page handler returns, and the errors the handlers raise (from :mod:`sac.errors`).

Each router (``pages``, ``admin``) is a class of its own module with its own Klein app; its
``web`` is the one :class:`sac.web.app.Web` with the store, templates and sessions.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sac.errors import BadRequest, CsrfError, Forbidden, SignInRefused
from sac.store import MeterQuery, Role

__all__ = [
    "BadRequest",
    "CsrfError",
    "Forbidden",
    "Page",
    "SignInRefused",
    "WebSettings",
    "arg",
    "list_filter",
    "page",
]

COOKIE = b"sac_session"
LOGIN_COOKIE = b"sac_login"  # the sign-in form's CSRF token, before there is a session


@dataclass(frozen=True, slots=True)
class WebSettings:
    session_ttl: dt.timedelta = dt.timedelta(hours=8)  # while in use (sliding)
    session_lifetime: dt.timedelta = dt.timedelta(hours=12)  # from sign-in, in use or not
    secure_cookies: bool = True  # False only behind plain HTTP (the demo, the tests)
    page_sizes: tuple[int, ...] = (25, 50, 100)
    name: str = "SAC"
    max_upload: int = 20 * 2**20  # bytes of a key CSV (100,000 rows take about 6 MB)
    metrics_public: bool = True  # /metrics without sign-in (for Prometheus on the LAN)
    sign_in_failures: int = 20  # failed sign-ins an address may make in 10 min (0: no limit)
    password_checks: int = 4  # scrypt checks at once in this process (32 MiB each)
    public_url: str = ""  # the application's URL for clients (the WSDL's address); "": as used


@dataclass(slots=True)
class Page:
    """What a page handler gives back: a template and its values, or a redirect."""

    template: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    redirect: str | None = None


Handler = Callable[..., Awaitable[Any]]


def arg(request: Any, name: str, default: str = "") -> str:
    """A form or query field, stripped; BadRequest when it is not UTF-8."""
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        return values[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest(f"field {name!r} is not UTF-8") from None


def page(role: Role) -> Callable[[Handler], Handler]:
    """A route for signed-in users of at least ``role``; a POST must carry the CSRF token.
    The handler gets the session and returns a :class:`Page` or bytes.  ``self`` is a
    router whose ``web`` is the :class:`sac.web.app.Web` (its sessions and templates)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def route(self: Any, request: Any, **kw: Any) -> Any:
            web = self.web
            session = await web.session(request)
            if session is None:
                target = request.uri.decode("latin-1")
                return web.redirect(request, "/login?" + urlencode({"next": target}))
            if not session.user.role.may(role):
                raise Forbidden(f"this needs the {role.value} role")
            if request.method == b"POST":
                given = arg(request, "csrf")
                if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                    raise CsrfError("the form is stale or not from this site")
            result = await handler(self, request, session, **kw)
            if isinstance(result, Page):
                if result.redirect is not None:
                    return web.redirect(request, result.redirect)
                assert result.template is not None
                return web.render(
                    request,
                    result.template,
                    result.status,
                    me=session.user,
                    csrf=session.csrf,
                    may_operate=session.user.role.may(Role.OPERATOR),
                    is_admin=session.user.role.may(Role.ADMIN),
                    **result.values,
                )
            return result

        return route

    return wrap


def list_filter(request: Any, now: dt.datetime) -> tuple[MeterQuery, dict[str, str]]:
    """The meter list's filter from its query fields (as ``/meters`` reads them), and those
    fields to carry on."""
    valve_text, unseen_text = arg(request, "valve"), arg(request, "unseen")
    valve = int(valve_text) if valve_text in ("0", "1", "2") else None
    unseen = int(unseen_text) if unseen_text.isdigit() and 0 < int(unseen_text) < 10000 else None
    search = arg(request, "q")[:32] or None
    alarms = arg(request, "alarms") == "1"
    query = MeterQuery(
        search=search,
        valve=valve,
        alarms=alarms,
        unseen_since=(now - dt.timedelta(days=unseen)).replace(second=0, microsecond=0)
        if unseen
        else None,
    )
    fields = {"q": search or "", "valve": valve_text if valve is not None else ""}
    fields |= {"alarms": "1" if alarms else "", "unseen": str(unseen) if unseen else ""}
    return query, {k: v for k, v in fields.items() if v}
