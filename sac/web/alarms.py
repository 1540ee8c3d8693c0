"""The alarms page (mounted at ``/alarms``): the open alarms of every meter, by category,
newest first, each acknowledged by an operator with a note.

Viewers see them; operators acknowledge one alarm (``POST /alarms/<id>/acknowledge``), or
every open alarm of a meter (``POST /alarms/meters/<LDN>/acknowledge``, the meter named in
``confirm`` as the valve's form does).  Each form carries the session's CSRF token
(:func:`sac.web.common.page`); each acknowledgement is a line of the audit trail, the user
its actor.  After one, the browser goes back where it was (``next``: a path of this site
only) with ``acknowledged=<count>``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from klein import Klein
from werkzeug.exceptions import NotFound

from sac.errors import InvalidRequest
from sac.eventcodes import Category
from sac.store import Role, WebSession
from sac.web import display
from sac.web.common import BadRequest, Page, arg, page
from sac.web.errors import install as install_errors
from sac.web.errors import is_api
from sac.web.pages import _safe_next

__all__ = ["AlarmPages"]

PAGE_SIZE = 50
CATEGORIES = tuple(c.value for c in Category)


def _note(request: Any) -> str | None:
    return arg(request, "note") or None


def _back(request: Any, fallback: str, count: int) -> str:
    """Where an acknowledgement returns: ``next`` (this site only), with the count."""
    target = _safe_next(arg(request, "next", fallback))
    path, hash_mark, anchor = target.partition("#")
    joiner = "&" if "?" in path else "?"
    return f"{path}{joiner}acknowledged={count}{hash_mark}{anchor}"


class AlarmPages:
    """The alarms' router; ``web`` is the :class:`sac.web.app.Web` it shares."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.store = web.store
        self.registry = web.registry

    @app.route("/", methods=["GET"])
    @page(Role.VIEWER)
    async def alarms(self, request: Any, session: WebSession) -> Page:
        category = arg(request, "category") or None
        if category is not None and category not in CATEGORIES:
            raise BadRequest(f"a category is one of {', '.join(CATEGORIES)}")
        ldn = arg(request, "ldn") or None
        after = arg(request, "after") or None
        try:
            found = await self.store.events.open_alarms(
                ldn=ldn, category=category, cursor=after, limit=PAGE_SIZE
            )
        except ValueError:
            raise BadRequest(
                "that page link is not valid any more; start from the first page"
            ) from None
        counts = await self.store.events.alarm_counts()
        ldns = [alarm.ldn for alarm in found.alarms]
        profiles = await display.profiles_by_ldn(self.store, self.registry, ldns)
        rows = [display.event_row(alarm, profiles[alarm.ldn]) for alarm in found.alarms]
        filters = {k: v for k, v in (("category", category), ("ldn", ldn)) if v}
        next_link = None
        if found.cursor is not None:
            next_link = "/alarms?" + urlencode({**filters, "after": found.cursor})
        here = "/alarms" + ("?" + urlencode(filters) if filters else "")
        return Page(
            "alarms.html",
            dict(
                title="Alarms",
                rows=rows,
                counts=counts,
                total=sum(c.alarms for c in counts),
                category=category,
                ldn=ldn,
                next_link=next_link,
                first_link=here if after else None,
                here=here,
                acknowledged=arg(request, "acknowledged"),
            ),
        )

    @app.route("/<int:alarm_id>/acknowledge", methods=["POST"])
    @page(Role.OPERATOR)
    async def acknowledge(self, request: Any, session: WebSession, alarm_id: int) -> Page:
        actor = self.web.actor(request, session)
        try:
            await self.store.events.acknowledge(alarm_id, actor, _note(request))
        except InvalidRequest as exc:
            raise BadRequest(str(exc)) from None
        return Page(redirect=_back(request, "/alarms", 1))

    @app.route("/meters/<string(length=16):ldn>/acknowledge", methods=["POST"])
    @page(Role.OPERATOR)
    async def acknowledge_meter(self, request: Any, session: WebSession, ldn: str) -> Page:
        if await self.store.meters.get(ldn) is None:
            raise NotFound()
        if arg(request, "confirm") != ldn:
            raise BadRequest("the confirmation does not name this meter")
        actor = self.web.actor(request, session)
        count = await self.store.events.acknowledge_meter(ldn, actor, arg(request, "note") or None)
        return Page(redirect=_back(request, f"/meters/{ldn}#events", count))

    install_errors(app, lambda pages: pages.web.render, is_api)
