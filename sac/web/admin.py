"""The admins' pages: users and their roles, API tokens, the audit trail, the running
settings and the meter profiles found at start-up.

Every change goes through the store with the admin as the audit trail's actor.  An admin
cannot disable themself or take away their own admin role (another admin can); the store
keeps at least one active admin whatever is asked.  A new password, a new role or disabling
ends that user's signed-in sessions, and a new password or re-enabling lifts a lock-out.
An API token acts as its user (with the user's role) until revoked; its secret is shown
once, on the page that follows its making, and the store keeps only a hash of it.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any
from urllib.parse import urlencode

from klein import Klein
from werkzeug.exceptions import NotFound

from sac.errors import Conflict
from sac.store import Role, UnknownUser, WebSession
from sac.web.common import BadRequest, Page, arg, page
from sac.web.errors import install as install_errors
from sac.web.forms import UserForm, parse_user_form

__all__ = ["AdminPages"]

AUDIT_PAGE = 100

# what a change was, for the line shown after it (the user's name is shown apart, escaped)
DONE = {
    "added": "was added",
    "role": "has a new role",
    "disabled": "is disabled and signed out",
    "enabled": "is enabled again",
    "password": "has a new password and is signed out",
}


class AdminPages:
    """The admins' router (mounted at ``/admin``); ``web`` is the :class:`sac.web.app.Web`
    it shares with the other pages."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self.store = web.store
        self.registry = web.registry
        self.settings = web.settings

    async def _users_page(
        self,
        request: Any,
        form: UserForm | None = None,
        status: int = 200,
        problem: str | None = None,
    ) -> Page:
        done = arg(request, "done")
        return Page(
            "admin_users.html",
            dict(
                title="Users",
                users=await self.store.users.all(),
                roles=[r.value for r in Role],
                form=form or UserForm({"role": Role.VIEWER.value}),
                problem=problem,
                done=DONE.get(done),
                done_user=arg(request, "user") if done in DONE else "",
                now=self.web.now(),
            ),
            status,
        )

    @app.route("/users", methods=["GET"])
    @page(Role.ADMIN)
    async def users(self, request: Any, session: WebSession) -> Page:
        return await self._users_page(request)

    @app.route("/users", methods=["POST"])
    @page(Role.ADMIN)
    async def add_user(self, request: Any, session: WebSession) -> Page:
        fields = ("name", "role", "password", "password2")
        form = parse_user_form(
            {k: arg(request, k) for k in fields}, fields=("name", "role", "password")
        )
        if form.errors:
            return await self._users_page(request, form, 400)
        assert form.role is not None and form.password is not None
        name = form.values["name"]
        try:
            await self.store.users.add(
                name,
                form.password,
                form.role,
                self.web.actor(request, session),
            )
        except Conflict:
            form.errors["name"] = "A user of this name exists already."
            return await self._users_page(request, form, 409)
        return Page(redirect=_done("added", name))

    @app.route("/users/change", methods=["POST"])
    @page(Role.ADMIN)
    async def change_user(self, request: Any, session: WebSession) -> Page:
        name, action = arg(request, "name"), arg(request, "action")
        by = self.web.actor(request, session)
        yourself = name == session.user.name
        change: dict[str, Any]
        if action == "role":
            form = parse_user_form({"role": arg(request, "role")}, fields=("role",))
            if form.errors:
                raise BadRequest("no such role")
            if yourself and form.role is not Role.ADMIN:
                return await self._users_page(
                    request, status=409, problem="You cannot take away your own admin role."
                )
            change = {"role": form.role}
        elif action in ("disabled", "enabled"):
            if yourself and action == "disabled":
                return await self._users_page(
                    request, status=409, problem="You cannot disable yourself."
                )
            change = {"active": action == "enabled"}
        elif action == "password":
            typed = {k: arg(request, k) for k in ("password", "password2")}
            form = parse_user_form(typed, fields=("password",))
            if form.errors:
                problem = next(iter(form.errors.values()))
                return await self._users_page(request, status=400, problem=f"{name}: {problem}")
            change = {"password": form.password}
        else:
            raise BadRequest(f"no action {action!r}")
        try:
            await self.store.users.update(name, by, **change)
        except Conflict:
            return await self._users_page(
                request,
                status=409,
                problem=f"{name} is the last active admin: make another admin first.",
            )
        if yourself and action == "password":
            return Page(redirect="/login")  # this session has ended with the old password
        return Page(redirect=_done(action, name))

    async def _tokens_page(
        self,
        request: Any,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status: int = 200,
        made: Any = None,
        secret: str | None = None,
    ) -> Page:
        revoked = arg(request, "revoked")
        return Page(
            "admin_tokens.html",
            dict(
                title="API tokens",
                tokens=await self.store.tokens.all(),
                users=[u for u in await self.store.users.all() if u.active],
                values=values or {},
                errors=errors or {},
                made=made,
                secret=secret,
                revoked=int(revoked) if revoked.isdigit() else None,
            ),
            status,
        )

    @app.route("/tokens", methods=["GET"])
    @page(Role.ADMIN)
    async def admin_tokens(self, request: Any, session: WebSession) -> Page:
        return await self._tokens_page(request)

    @app.route("/tokens", methods=["POST"])
    @page(Role.ADMIN)
    async def admin_create_token(self, request: Any, session: WebSession) -> Page:
        values = {"user": arg(request, "user"), "name": arg(request, "name")}
        errors = {}
        name = values["name"]
        if not name:
            errors["name"] = "Name the token after the system that will use it."
        elif len(name) > 100 or not name.isprintable():
            errors["name"] = "A token's name is 1 to 100 printable characters."
        active = {u.name for u in await self.store.users.all() if u.active}
        if values["user"] not in active:
            errors["user"] = "Choose an active user: the token acts as them, with their role."
        if errors:
            return await self._tokens_page(request, values, errors, 400)
        by = self.web.actor(request, session)
        try:
            secret, token = await self.store.tokens.create(values["user"], name, by)
        except UnknownUser:  # gone meanwhile
            errors["user"] = "Choose an active user: the token acts as them, with their role."
            return await self._tokens_page(request, values, errors, 400)
        # the one time the secret is shown: this answer is not cached (Cache-Control no-store)
        return await self._tokens_page(request, made=token, secret=secret)

    @app.route("/tokens/revoke", methods=["POST"])
    @page(Role.ADMIN)
    async def admin_revoke_token(self, request: Any, session: WebSession) -> Page:
        text = arg(request, "id")
        if not text.isdigit():
            raise BadRequest("no token id")
        try:
            await self.store.tokens.revoke(
                int(text),
                self.web.actor(request, session),
            )
        except KeyError:
            raise NotFound() from None
        return Page(redirect=f"/admin/tokens?revoked={int(text)}")

    @app.route("/audit", methods=["GET"])
    @page(Role.ADMIN)
    async def audit(self, request: Any, session: WebSession) -> Page:
        before_text = arg(request, "before")
        before = int(before_text) if before_text.isdigit() else None
        entries = await self.store.audit.log(AUDIT_PAGE + 1, before)
        more = len(entries) > AUDIT_PAGE
        entries = entries[:AUDIT_PAGE]
        return Page(
            "admin_audit.html",
            dict(
                title="Audit trail",
                entries=entries,
                next_before=entries[-1].id if more else None,
                first=before is None,
            ),
        )

    @app.route("/system", methods=["GET"])
    @page(Role.ADMIN)
    async def system(self, request: Any, session: WebSession) -> Page:
        s = self.settings
        settings = [
            ("Name shown", s.name),
            ("Session lasts while in use", f"{s.session_ttl}"),
            ("Secure cookies (HTTPS only)", "yes" if s.secure_cookies else "no (plain HTTP)"),
            ("List page sizes", ", ".join(map(str, s.page_sizes))),
            ("Largest key CSV", f"{s.max_upload / 2**20:.0f} MiB"),
            ("/metrics without sign-in", "yes" if s.metrics_public else "no"),
            ("Store", type(self.store).__name__),
        ]
        versions = [("sac", _version("sac")), ("Python", platform.python_version())]
        versions += [(p, _version(p)) for p in ("twisted", "klein", "cryptography", "spyne")]
        profiles = [self.registry.profiles[n] for n in sorted(self.registry.profiles)]
        return Page(
            "admin_system.html",
            dict(
                title="System",
                settings=settings,
                configuration=self.web.configuration,
                versions=versions,
                profiles=profiles,
                default_profile=self.registry.default,
            ),
        )

    install_errors(app, lambda admin: admin.web.render, lambda request: False)


def _done(action: str, name: str) -> str:
    return "/admin/users?" + urlencode({"done": action, "user": name})


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
