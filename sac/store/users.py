"""Users and their signed-in browsers: accounts with a role, sign-in with a lock-out after
failures in a row (audited), web sessions stored as hashes of their tokens."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from typing import Any

from zope.interface import Interface, implementer

from sac import passwords
from sac.errors import Conflict, InvalidRequest, UnknownUser
from sac.passwords import ScryptParams
from sac.store.audit import audit, audited
from sac.store.model import Actor, Role, User, WebSession
from sac.store.rows import USER_COLUMNS, user_row
from sac.store.sql import Component, Connection, Exec, Query, Transaction, stamp

__all__ = [
    "LOCKOUT",
    "LOCKOUT_FAILURES",
    "MAX_USER_NAME",
    "ISessions",
    "IUsers",
    "SessionsComponent",
    "UsersComponent",
    "token_hash",
]

LOCKOUT_FAILURES = 5  # failed sign-ins in a row that lock a user out...
LOCKOUT = dt.timedelta(minutes=15)  # ...for this long
MAX_USER_NAME = 64


def _check_name(name: str) -> None:
    if not (1 <= len(name) <= MAX_USER_NAME) or not name.isprintable() or name != name.strip():
        raise InvalidRequest("a user name is 1 to 64 printable characters, no outer spaces")


def add_user(name: str, password_hash: str, role: Role, now: dt.datetime) -> Transaction[User]:
    _check_name(name)
    taken = yield Query("SELECT 1 FROM users WHERE name = ?", (name,))
    if taken:
        raise Conflict(f"a user {name!r} is already present")
    rows = yield Query(
        "INSERT INTO users (name, password, role, active, created, updated)"
        f" VALUES (?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}",
        (name, password_hash, role.value, True, now, now),
    )
    return user_row(rows[0])


def login_record(name: str) -> Transaction[tuple[User, str, dt.datetime | None] | None]:
    """(user, password hash, end of a lock-out or None) of an active user, or None."""
    rows = yield Query(
        f"SELECT {USER_COLUMNS}, password FROM users WHERE name = ? AND active = ?",
        (name, True),
    )
    if not rows:
        return None
    user = user_row(rows[0])
    return user, rows[0][7], user.locked_until


def reserve_sign_in(user: User, by: Actor, now: dt.datetime) -> Transaction[int | None]:
    """Before ``user``'s password is checked: count the attempt as a failure in a row in
    advance, in one statement, so that attempts sent in parallel (all arriving before any
    has failed) see each other.  The failures in a row (the new one included), or None
    when no check may start: the user is locked out, or :data:`LOCKOUT_FAILURES` attempts
    have failed or are under way -- then the user is locked out now (audited), so a burst
    gets no more checks than that."""
    rows = yield Query(
        "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? AND active = ?"
        " AND (locked_until IS NULL OR locked_until <= ?) AND failed_logins < ?"
        " RETURNING failed_logins",
        (user.id, True, now, LOCKOUT_FAILURES),
    )
    if rows:
        return int(rows[0][0])
    yield from _lock_out(user, by, now, "active = ?", True)
    return None


def _lock_out(user: User, by: Actor, now: dt.datetime, where: str, value: Any) -> Transaction[None]:
    """Lock ``user`` out for :data:`LOCKOUT` when ``where`` holds and no lock-out runs,
    and start the failures in a row again; audited."""
    until = now + LOCKOUT
    rows = yield Query(
        f"UPDATE users SET failed_logins = 0, locked_until = ? WHERE id = ? AND {where}"
        " AND (locked_until IS NULL OR locked_until <= ?) RETURNING id",
        (until, user.id, value, now),
    )
    if rows:
        yield from audit(by, "locked out", user.name, f"until {until.isoformat()}", now)


def sign_in_failed(user: User, by: Actor, now: dt.datetime, failures: int) -> Transaction[None]:
    """A wrong password for ``user``, whose attempt :func:`reserve_sign_in` counted as the
    ``failures``-th in a row: audited; when :data:`LOCKOUT_FAILURES` are counted (some may
    still be under way) the user is locked out for :data:`LOCKOUT`, and the count starts
    again for when the lock ends."""
    yield from audit(by, "sign-in failed", None, f"{failures} in a row", now)
    yield from _lock_out(user, by, now, "failed_logins >= ?", LOCKOUT_FAILURES)


def signed_in(
    user: User, by: Actor, now: dt.datetime, password_hash: str | None = None
) -> Transaction[bool]:
    """A right password for ``user``: the failures in a row are forgotten (and a stronger
    hash of the password replaces the old one), audited; True.  False when a lock-out began
    while the password was checked (guesses sent in parallel): then nothing changes but the
    audit trail, and the sign-in is refused like a wrong password."""
    sets = "failed_logins = 0, locked_until = NULL" + (", password = ?" if password_hash else "")
    rows = yield Query(
        f"UPDATE users SET {sets} WHERE id = ? AND (locked_until IS NULL OR locked_until <= ?)"
        " RETURNING id",
        [*([password_hash] if password_hash else []), user.id, now],
    )
    if not rows:
        detail = "locked out while the password was checked"
        yield from audit(by, "sign-in failed", None, detail, now)
        return False
    yield from audit(by, "sign-in", None, None, now)
    return True


def get_user(name: str) -> Transaction[User | None]:
    rows = yield Query(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", (name,))
    return user_row(rows[0]) if rows else None


def users() -> Transaction[list[User]]:
    rows = yield Query(f"SELECT {USER_COLUMNS} FROM users ORDER BY name")
    return [user_row(row) for row in rows]


def update_user(
    name: str,
    now: dt.datetime,
    *,
    role: Role | None = None,
    active: bool | None = None,
    password_hash: str | None = None,
) -> Transaction[User]:
    """Change a user's role, activity or password; the last active admin stays one."""
    user = yield from get_user(name)
    if user is None:
        raise UnknownUser(name)
    losing_admin = (
        user.role is Role.ADMIN
        and user.active
        and ((role is not None and role is not Role.ADMIN) or active is False)
    )
    if losing_admin:
        rows = yield Query(
            "SELECT count(*) FROM users WHERE role = 'admin' AND active = ? AND name <> ?",
            (True, name),
        )
        if not rows[0][0]:
            raise Conflict(f"{name!r} is the last active admin")
    sets: list[str] = ["updated = ?"]
    params: list[Any] = [now]
    for column, value in (("role", role), ("active", active), ("password", password_hash)):
        if value is not None:
            sets.append(f"{column} = ?")
            params.append(value.value if isinstance(value, Role) else value)
    if password_hash is not None or active is True:
        # an admin's new password or re-enabling lifts a lock-out
        sets += ["failed_logins = 0", "locked_until = NULL"]
    yield Exec(f"UPDATE users SET {', '.join(sets)} WHERE name = ?", [*params, name])
    if active is False or (role is not None and role is not user.role) or password_hash:
        # what a signed-in browser was let in for has changed: it signs in again
        yield Exec("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))
    changed = yield from get_user(name)
    assert changed is not None  # (found above, in this transaction)
    return changed


# --- web sessions -------------------------------------------------------------------------


def token_hash(token: str) -> bytes:
    """What is stored of a session token: its SHA-256, so a copy of the database (a backup)
    signs nobody in."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_web_session(
    name: str,
    token: str,
    csrf: str,
    now: dt.datetime,
    ttl: dt.timedelta,
    address: str | None,
    lifetime: dt.timedelta | None = None,
) -> Transaction[WebSession]:
    """A signed-in browser of the active user ``name`` until ``now + ttl`` (at most ``now +
    lifetime``); sessions already over are deleted on the way."""
    if ttl <= dt.timedelta(0) or (lifetime is not None and lifetime <= dt.timedelta(0)):
        raise InvalidRequest("a session lasts some time")
    yield Exec("DELETE FROM web_sessions WHERE expires < ?", (now,))
    rows = yield Query(
        f"SELECT {USER_COLUMNS} FROM users WHERE name = ? AND active = ?", (name, True)
    )
    if not rows:
        raise UnknownUser(name)
    user = user_row(rows[0])
    expires = now + (min(ttl, lifetime) if lifetime is not None else ttl)
    yield Exec(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, created, expires, address)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash(token), user.id, csrf, now, expires, address),
    )
    return WebSession(user, csrf, expires, address)


_SESSION_USER = ", ".join(f"u.{column}" for column in USER_COLUMNS.split(", "))


def web_session(
    token: str,
    now: dt.datetime,
    ttl: dt.timedelta | None,
    lifetime: dt.timedelta | None = None,
) -> Transaction[WebSession | None]:
    """The session of ``token`` if it is not over and its user is active, else None.  With
    ``ttl``, a session with less than half of it left is extended to ``now + ttl`` (a
    browser in use stays signed in; one left alone is not, for long) -- but never beyond
    ``lifetime`` after it was created: then it is over however much it is used."""
    hashed = token_hash(token)
    rows = yield Query(
        f"SELECT s.csrf, s.expires, s.address, s.created, {_SESSION_USER} FROM web_sessions s"
        " JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires > ?"
        " AND u.active = ?",
        (hashed, now, True),
    )
    if not rows:
        return None
    csrf, address = rows[0][0], rows[0][2]
    expires = stamp(rows[0][1])
    created = stamp(rows[0][3])
    end = created + lifetime if lifetime is not None else None
    if end is not None and end <= now:
        yield Exec("DELETE FROM web_sessions WHERE token_hash = ?", (hashed,))
        return None
    if ttl is not None and expires - now < ttl / 2:
        expires = now + ttl if end is None else min(now + ttl, end)
        yield Exec("UPDATE web_sessions SET expires = ? WHERE token_hash = ?", (expires, hashed))
    return WebSession(user_row(rows[0][4:]), csrf, expires, address)


def end_web_session(token: str) -> Transaction[None]:
    yield Exec("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash(token),))


class IUsers(Interface):
    async def add(name: str, password: str, role: Role, by: Actor | None = None) -> User:
        """A new user; the password is hashed with scrypt (off the reactor)."""

    async def authenticate(name: str, password: str, address: str | None = None) -> User | None:
        """The active user with this name and password, else None -- one answer, and one
        scrypt check, whether the password is wrong, the name unknown or the user locked
        out (a locked user's password is not checked: a decoy hash is), audited with
        ``address``.  The attempt is reserved before the check (:func:`reserve_sign_in`):
        a user gets at most ``LOCKOUT_FAILURES`` checks before the lock-out, however many
        guesses arrive at once, from however many processes."""

    async def update(
        name: str,
        by: Actor | None = None,
        *,
        role: Role | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> User:
        """Change a user's role, activity or password, audited; the last admin stays.  A new
        role or password, or disabling, ends the user's web sessions."""

    async def all() -> list[User]:
        """Every user, by name."""

    async def get(name: str) -> User | None:
        """The user of this name as stored now (its role, whether active), or None."""


@implementer(IUsers)
class UsersComponent(Component):
    def __init__(self, db: Connection, password_params: ScryptParams) -> None:
        super().__init__(db)
        self._password_params = password_params
        # a hash to check when the user is unknown, so a wrong name costs what a wrong
        # password costs (no user enumeration by timing)
        self._decoy_hash: str | None = None

    async def _hash(self, password: str) -> str:
        return await self.db.in_thread(passwords.hash_password, password, self._password_params)

    async def add(self, name: str, password: str, role: Role, by: Actor | None = None) -> User:
        hashed = await self._hash(password)
        now = self.db.now()
        change = add_user(name, hashed, role, now)
        return await self.db.run(audited(change, by, "add user", name, now, role.value))

    async def _decoy_check(self, password: str) -> None:
        """The scrypt check a real password costs, against a hash of nobody's: an unknown or
        locked user is answered no sooner than a wrong password."""
        if self._decoy_hash is None:
            self._decoy_hash = await self._hash("not a password of anyone")
        await self.db.in_thread(passwords.verify_password, password, self._decoy_hash)

    async def _refused(self, by: Actor, password: str, detail: str) -> None:
        await self._decoy_check(password)
        await self.db.run(audit(by, "sign-in failed", None, detail, self.db.now()))

    async def authenticate(
        self, name: str, password: str, address: str | None = None
    ) -> User | None:
        by = Actor(name, address)
        known = len(name) <= MAX_USER_NAME
        found = await self.db.run(login_record(name)) if known else None
        if found is None:
            await self._refused(by, password, "no active user of this name")
            return None
        user, hashed, _ = found
        failures = await self.db.run(reserve_sign_in(user, by, self.db.now()))
        if failures is None:  # locked out, or enough attempts under way: not checked
            await self._refused(by, password, "locked out: password not checked")
            return None
        if not await self.db.in_thread(passwords.verify_password, password, hashed):
            await self.db.run(sign_in_failed(user, by, self.db.now(), failures))
            return None
        rehashed = None
        if passwords.needs_rehash(hashed, self._password_params):
            rehashed = await self._hash(password)
        if not await self.db.run(signed_in(user, by, self.db.now(), rehashed)):
            return None
        return dataclasses.replace(user, locked_until=None)  # the sign-in lifted any lock

    async def update(
        self,
        name: str,
        by: Actor | None = None,
        *,
        role: Role | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> User:
        hashed = await self._hash(password) if password is not None else None
        now = self.db.now()
        change = update_user(name, now, role=role, active=active, password_hash=hashed)
        what = ", ".join(
            part
            for part in (
                f"role {role.value}" if role is not None else "",
                ("enabled" if active else "disabled") if active is not None else "",
                "password" if password is not None else "",
            )
            if part
        )
        return await self.db.run(audited(change, by, "update user", name, now, what))

    async def all(self) -> list[User]:
        return await self.db.run(users())

    async def get(self, name: str) -> User | None:
        return await self.db.run(get_user(name))


class ISessions(Interface):
    async def create(
        name: str,
        ttl: dt.timedelta,
        address: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> tuple[str, WebSession]:
        """A new signed-in browser of the active user ``name`` for ``ttl`` (at most
        ``lifetime``): (its token, for the cookie; the session).  Only a hash of the token
        is stored."""

    async def get(
        token: str, ttl: dt.timedelta | None = None, lifetime: dt.timedelta | None = None
    ) -> WebSession | None:
        """The session of ``token``, None when unknown, over or its user disabled; with
        ``ttl``, extended to now + ``ttl`` when less than half of it is left, but never
        beyond ``lifetime`` after the sign-in (then it is over, in use or not)."""

    async def end(token: str) -> None:
        """Sign a browser out."""


@implementer(ISessions)
class SessionsComponent(Component):
    async def create(
        self,
        name: str,
        ttl: dt.timedelta,
        address: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> tuple[str, WebSession]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.db.now()
        change = create_web_session(name, token, csrf, now, ttl, address, lifetime)
        return token, await self.db.run(change)

    async def get(
        self, token: str, ttl: dt.timedelta | None = None, lifetime: dt.timedelta | None = None
    ) -> WebSession | None:
        return await self.db.run(web_session(token, self.db.now(), ttl, lifetime))

    async def end(self, token: str) -> None:
        await self.db.run(end_web_session(token))
