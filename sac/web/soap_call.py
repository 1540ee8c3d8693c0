"""One SOAP call of the ERP API (:mod:`sac.web.soap`): who makes it -- HTTP Basic, a
WS-Security UsernameToken or an API token (Bearer), checked -- and its audit line, the call
refused or done."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from spyne import Fault

from sac.store import Actor, Role, User
from sac.web.common import SignInRefused
from sac.web.soap_types import (
    CREDENTIALS_TTL,
    WSSE,
    AuthenticationFault,
    ForbiddenFault,
    _fault,
)

__all__ = ["Call"]


class Call:
    """One SOAP call: who makes it (checked), and its audit line."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.web = ctx.app.sac_web
        self.request = ctx.transport.req
        self.address = self.request.getClientAddress().host

    async def user(self) -> User:
        raw = self.request.getHeader(b"authorization")
        if raw:
            scheme, _, value = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "basic":
                try:
                    name, sep, password = (
                        base64.b64decode(value, validate=True).decode().partition(":")
                    )
                except (binascii.Error, UnicodeDecodeError):
                    name, sep, password = "", "", ""
                if sep:
                    return await self._password(name, password)
            elif scheme.lower() == "bearer":
                token = await self.web.store.tokens.get(value.strip())
                if token is not None:
                    return token.user
            raise AuthenticationFault("these credentials are not valid")
        found = self._username_token()
        if found is not None:
            return await self._password(*found)
        raise AuthenticationFault(
            "sign in: HTTP Basic, a WS-Security UsernameToken or an API token (Bearer)"
        )

    def _username_token(self) -> tuple[str, str] | None:
        for element in self.ctx.in_header_doc or ():
            for token in element.iter(f"{{{WSSE}}}UsernameToken"):
                name = token.findtext(f"{{{WSSE}}}Username")
                password = token.findtext(f"{{{WSSE}}}Password")
                if name is not None and password is not None:
                    return name.strip(), password
        return None

    async def _password(self, name: str, password: str) -> User:
        known = self.ctx.app.sac_credentials
        key = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        now = self.web.now()
        held = known.get(key)
        if held is not None and held[1] > now:
            # the password was right a moment ago; who the user is now, the store says
            user = await self.web.store.users.get(name)
            if user is not None and user.active and user.updated == held[0].updated:
                return user
            del known[key]  # changed since (role, password, disabled): checked again
        try:
            user = await self.web.check_password(name, password, self.address)
        except SignInRefused as refused:
            raise _fault(refused) from None
        if user is None:  # a wrong password, an unknown name, a locked user: one answer
            raise AuthenticationFault("wrong user name or password")
        if len(known) > 10_000:
            known.clear()
        known[key] = (user, now + CREDENTIALS_TTL)
        return user

    async def run(
        self,
        role: Role,
        target: str | None,
        detail: str | None,
        work: Callable[[Actor], Awaitable[Any]],
    ) -> Any:
        user = await self.user()  # a failed sign-in is audited by the store
        actor = Actor(user.name, self.address)
        operation = self.ctx.method_request_string.rpartition("}")[2]
        try:
            if not user.role.may(role):
                raise ForbiddenFault(f"this operation needs the {role.value} role")
            try:
                result = await work(actor)
            except Fault:
                raise
            except Exception as exc:  # the error map says which are the caller's faults
                raise _fault(exc) from None
        except Fault as fault:  # a refused call is a line of the trail too
            why = f"refused: {fault.faultcode} {fault.faultstring}"
            await self.web.store.audit.record(actor, f"soap {operation}", target, why)
            raise
        await self.web.store.audit.record(actor, f"soap {operation}", target, detail)
        return result
