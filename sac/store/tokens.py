"""API tokens: what machine clients present, each acting as a user; only hashes are stored."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

from zope.interface import Interface, implementer

from sac.errors import InvalidRequest, UnknownToken, UnknownUser
from sac.store.audit import audited
from sac.store.model import Actor, ApiToken, User
from sac.store.rows import USER_COLUMNS, user_row
from sac.store.sql import Component, Exec, Query, Transaction, stamp, when
from sac.store.users import token_hash

__all__ = ["ITokens", "TokensComponent"]

# a token used again within this long is not written again (no write per API call)
_LAST_USED_STEP = dt.timedelta(minutes=1)

_TOKEN_COLUMNS = "t.id, t.name, t.created, t.last_used, t.revoked, " + ", ".join(
    f"u.{column}" for column in USER_COLUMNS.split(", ")
)


def _token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(row[0], row[1], user_row(row[5:]), stamp(row[2]), when(row[3]), when(row[4]))


def create_api_token(
    user_name: str, name: str, token: str, now: dt.datetime
) -> Transaction[ApiToken]:
    if not (1 <= len(name) <= 100) or not name.isprintable():
        raise InvalidRequest("a token's name is 1 to 100 printable characters")
    users = yield Query(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", (user_name,))
    if not users:
        raise UnknownUser(user_name)
    user: User = user_row(users[0])
    rows = yield Query(
        "INSERT INTO api_tokens (token_hash, user_id, name, created) VALUES (?, ?, ?, ?)"
        " RETURNING id",
        (token_hash(token), user.id, name, now),
    )
    return ApiToken(rows[0][0], name, user, now, None, None)


def api_token(token: str, now: dt.datetime) -> Transaction[ApiToken | None]:
    """The live token (not revoked, its user active) whose secret is ``token``, else None;
    its last use is written at most once a minute."""
    rows = yield Query(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.revoked IS NULL AND u.active = ?",
        (token_hash(token), True),
    )
    if not rows:
        return None
    found = _token(rows[0])
    if found.last_used is None or now - found.last_used >= _LAST_USED_STEP:
        yield Exec("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, found.id))
    return found


def api_tokens() -> Transaction[list[ApiToken]]:
    rows = yield Query(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id"
    )
    return [_token(row) for row in rows]


def revoke_api_token(token_id: int, now: dt.datetime) -> Transaction[str | None]:
    rows = yield Query(
        "UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL RETURNING name",
        (now, token_id),
    )
    if not rows:
        exists = yield Query("SELECT 1 FROM api_tokens WHERE id = ?", (token_id,))
        if not exists:
            raise UnknownToken(f"no API token #{token_id}")
    return rows[0][0] if rows else None


class ITokens(Interface):
    async def create(user: str, name: str, by: Actor | None = None) -> tuple[str, ApiToken]:
        """A token for a machine client acting as ``user``: (the secret, shown once; the
        token).  Only its hash is stored."""

    async def get(token: str) -> ApiToken | None:
        """The live token with this secret (not revoked, its user active), else None."""

    async def all() -> list[ApiToken]:
        """Every token, revoked ones too, oldest first."""

    async def revoke(token_id: int, by: Actor | None = None) -> None:
        """Revoke a token for good; UnknownToken for an unknown id."""


@implementer(ITokens)
class TokensComponent(Component):
    async def create(self, user: str, name: str, by: Actor | None = None) -> tuple[str, ApiToken]:
        token = "sac_" + secrets.token_urlsafe(32)
        now = self.db.now()
        change = create_api_token(user, name, token, now)
        made = await self.db.run(audited(change, by, "create API token", user, now, name))
        return token, made

    async def get(self, token: str) -> ApiToken | None:
        return await self.db.run(api_token(token, self.db.now()))

    async def all(self) -> list[ApiToken]:
        return await self.db.run(api_tokens())

    async def revoke(self, token_id: int, by: Actor | None = None) -> None:
        now = self.db.now()
        change = revoke_api_token(token_id, now)
        await self.db.run(audited(change, by, "revoke API token", f"#{token_id}", now))
