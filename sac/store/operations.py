"""Transactions of the SAC's operations: the command queue, users and the audit trail.

Same shape as :mod:`sac.store.transactions`: generators yielding SQL, run by a backend in one
database transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sac.errors import StorageError
from sac.store.model import (
    Actor,
    AuditEntry,
    Command,
    CommandState,
    CommandTransition,
    Role,
    User,
    WebSession,
)
from sac.store.transactions import Conflict, Exec, Query, Transaction, _meter_id, when

__all__ = [
    "LOCKOUT",
    "LOCKOUT_FAILURES",
    "MAX_USER_NAME",
    "CommandStateError",
    "UnknownCommand",
    "UnknownUser",
]

LOCKOUT_FAILURES = 5  # failed sign-ins in a row that lock a user out...
LOCKOUT = dt.timedelta(minutes=15)  # ...for this long
MAX_USER_NAME = 64
# the most characters of each field of an audit line: what comes from outside (a user name
# tried at sign-in, an LDN in a SOAP call) may be any length, the trail's lines are not
AUDIT_LIMITS = {"actor": 100, "address": 64, "action": 100, "target": 200, "detail": 2000}


class UnknownCommand(StorageError):
    def __init__(self, command_id: int) -> None:
        super().__init__(f"no command {command_id}")
        self.command_id = command_id


class CommandStateError(StorageError):
    """A command moved where its state does not allow (cancel a command already sent...)."""


class UnknownUser(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no user {name!r}")
        self.name = name


# --- audit --------------------------------------------------------------------------------


def clip(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def audit(by: Actor, action: str, target: str | None, detail: str | None, now: dt.datetime):
    """One line of the audit trail, in the transaction of the change it records; each field
    cut to its :data:`AUDIT_LIMITS` (every line is written here)."""
    fields = {
        "actor": by.name,
        "address": by.address,
        "action": action,
        "target": target,
        "detail": detail,
    }
    yield Exec(
        "INSERT INTO audit (at, actor, address, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (now, *(clip(value, AUDIT_LIMITS[name]) for name, value in fields.items())),
    )


def audited(
    transaction: Transaction,
    by: Actor | None,
    action: str,
    target: str | None,
    now: dt.datetime,
    detail: str | None = None,
) -> Transaction:
    """``transaction``, then its audit line: both or neither."""
    result = yield from transaction
    if by is not None:
        yield from audit(by, action, target, detail, now)
    return result


def audit_log(limit: int, before: int | None) -> Transaction:
    """The latest audit lines, newest first; ``before``: ids below it (the next page)."""
    where, params = ("WHERE id < ? ", [before]) if before is not None else ("", [])
    rows = yield Query(
        "SELECT id, at, actor, address, action, target, detail FROM audit "
        f"{where}ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        AuditEntry(i, when(at), actor, address, action, target, detail)  # type: ignore[arg-type]
        for i, at, actor, address, action, target, detail in rows
    ]


def ping() -> Transaction:
    """A round trip to the database, for health checks."""
    rows = yield Query("SELECT 1", [])
    return rows[0][0] == 1


# --- commands -----------------------------------------------------------------------------

_COMMAND_COLUMNS = (
    "c.id, m.ldn, c.kind, c.params, c.state, c.requested_by, c.created, c.expires, c.sent,"
    " c.finished, c.attempts, c.result, c.priority"
)
_FROM_COMMANDS = "FROM commands c JOIN meters m ON m.id = c.meter_id"


def _command(row: Sequence[Any]) -> Command:
    return Command(
        id=row[0],
        ldn=row[1],
        kind=row[2],
        params=json.loads(row[3]),
        state=CommandState(row[4]),
        requested_by=row[5],
        created=when(row[6]),  # type: ignore[arg-type]
        expires=when(row[7]),
        sent=when(row[8]),
        finished=when(row[9]),
        attempts=row[10],
        result=row[11],
        priority=row[12],
    )


def _log(ids: Sequence[int], state: CommandState, now: dt.datetime, detail: str | None):
    """The transition of commands ``ids`` to ``state``, in the command log."""
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        yield Exec(
            "INSERT INTO command_log (command_id, at, state, detail)"
            f" SELECT id, ?, ?, ? FROM commands WHERE id IN ({', '.join('?' * len(part))})",
            [now, state.value, detail, *part],
        )


def command_history(command_id: int) -> Transaction:
    """Every transition of a command, oldest first."""
    rows = yield Query(
        "SELECT at, state, detail FROM command_log WHERE command_id = ? ORDER BY id",
        (command_id,),
    )
    return [CommandTransition(when(at), CommandState(state), detail) for at, state, detail in rows]  # type: ignore[arg-type]


def queue_command(
    ldn: str,
    kind: str,
    params: Mapping[str, Any],
    requested_by: str,
    expires: dt.datetime | None,
    now: dt.datetime,
    priority: int = 0,
) -> Transaction:
    """A new pending command for a meter; a higher ``priority`` runs first."""
    if expires is not None and expires <= now:
        raise ValueError("a command's deadline must be in the future")
    meter_id = yield from _meter_id(ldn)
    rows = yield Query(
        "INSERT INTO commands (meter_id, kind, params, requested_by, created, expires, priority)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (meter_id, kind, json.dumps(params, sort_keys=True), requested_by, now, expires, priority),
    )
    yield from _log([rows[0][0]], CommandState.PENDING, now, f"queued by {requested_by}")
    return (yield from get_command(rows[0][0]))


def get_command(command_id: int) -> Transaction:
    rows = yield Query(f"SELECT {_COMMAND_COLUMNS} {_FROM_COMMANDS} WHERE c.id = ?", (command_id,))
    if not rows:
        raise UnknownCommand(command_id)
    return _command(rows[0])


def commands(ldn: str | None, states: Collection[CommandState] | None, limit: int) -> Transaction:
    """Commands, newest first, of one meter and/or in some states."""
    where: list[str] = []
    params: list[Any] = []
    if ldn is not None:
        where.append("m.ldn = ?")
        params.append(ldn)
    if states:
        where.append(f"c.state IN ({', '.join('?' * len(states))})")
        params += [s.value for s in states]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = yield Query(
        f"SELECT {_COMMAND_COLUMNS} {_FROM_COMMANDS}{clause} ORDER BY c.id DESC LIMIT ?",
        [*params, limit],
    )
    return [_command(row) for row in rows]


def claim_commands(ldn: str, now: dt.datetime, by: str | None = None) -> Transaction:
    """The meter's pending commands, highest priority then oldest first, now ``sent``
    (claimed by this session, ``by``: which process);
    those past their deadline become ``expired`` instead.  Rows another process is claiming
    are skipped, so two processes never run one command."""
    meter_id = yield from _meter_id(ldn)
    rows = yield Query(
        "SELECT id, expires FROM commands WHERE meter_id = ? AND state = 'pending'"
        " ORDER BY priority DESC, id",
        (meter_id,),
        lock=True,
    )
    late = [i for i, expires in rows if expires is not None and when(expires) <= now]
    due = [i for i, expires in rows if i not in late]
    if late:
        yield from _move(late, CommandState.EXPIRED, now, "finished")
        yield from _log(late, CommandState.EXPIRED, now, "past its deadline")
    if not due:
        return []
    yield Exec(
        f"UPDATE commands SET state = 'sent', sent = ?, attempts = attempts + 1"
        f" WHERE id IN ({', '.join('?' * len(due))})",
        [now, *due],
    )
    yield from _log(due, CommandState.SENT, now, f"claimed by {by}" if by else None)
    claimed = yield Query(
        f"SELECT {_COMMAND_COLUMNS} {_FROM_COMMANDS} WHERE c.id IN ({', '.join('?' * len(due))})"
        " ORDER BY c.priority DESC, c.id",
        due,
    )
    return [_command(row) for row in claimed]


def _move(ids: Sequence[int], state: CommandState, now: dt.datetime, stamp: str) -> Transaction:
    yield Exec(
        f"UPDATE commands SET state = ?, {stamp} = ? WHERE id IN ({', '.join('?' * len(ids))})",
        [state.value, now, *ids],
    )


# the moves a command may make: (from, to)
_MOVES = {
    CommandState.DONE: (CommandState.SENT,),
    CommandState.FAILED: (CommandState.SENT, CommandState.PENDING),
    CommandState.CANCELLED: (CommandState.PENDING,),
    CommandState.PENDING: (CommandState.SENT,),  # back in the queue: try again later
}


def move_command(
    command_id: int, to: CommandState, result: str | None, now: dt.datetime
) -> Transaction:
    """Move a command on: sent -> done/failed, sent -> pending (retry at the next session),
    pending -> cancelled (or failed, e.g. the meter was removed).  Any other move is refused
    with the state the command is in; the check and the write are one statement."""
    allowed = _MOVES.get(to)
    if allowed is None:
        raise ValueError(f"a command is not moved to {to.value} by hand")
    stamp = "sent" if to is CommandState.PENDING else "finished"
    value = None if to is CommandState.PENDING else now
    count = yield Exec(
        f"UPDATE commands SET state = ?, {stamp} = ?, result = ?"
        f" WHERE id = ? AND state IN ({', '.join('?' * len(allowed))})",
        [to.value, value, result, command_id, *(s.value for s in allowed)],
    )
    command = yield from get_command(command_id)
    if not count:
        raise CommandStateError(f"command {command_id} is {command.state.value}: not {to.value}")
    yield from _log([command_id], to, now, result)
    return command


def expire_commands(now: dt.datetime) -> Transaction:
    """Pending commands past their deadline become expired; how many."""
    yield Exec(
        "INSERT INTO command_log (command_id, at, state, detail) SELECT id, ?, 'expired',"
        " 'past its deadline' FROM commands"
        " WHERE state = 'pending' AND expires IS NOT NULL AND expires <= ?",
        (now, now),
    )
    count = yield Exec(
        "UPDATE commands SET state = 'expired', finished = ?"
        " WHERE state = 'pending' AND expires IS NOT NULL AND expires <= ?",
        (now, now),
    )
    return count


def requeue_stale_commands(sent_before: dt.datetime, now: dt.datetime) -> Transaction:
    """Commands claimed before ``sent_before`` and never finished (their process died) go
    back to pending; how many."""
    yield Exec(
        "INSERT INTO command_log (command_id, at, state, detail) SELECT id, ?, 'pending',"
        " 'requeued: its session ended without an answer' FROM commands"
        " WHERE state = 'sent' AND sent < ?",
        (now, sent_before),
    )
    count = yield Exec(
        "UPDATE commands SET state = 'pending', sent = NULL WHERE state = 'sent' AND sent < ?",
        (sent_before,),
    )
    return count


# --- users --------------------------------------------------------------------------------

_USER_COLUMNS = "id, name, role, active, created, updated, locked_until"


def _user(row: Sequence[Any]) -> User:
    return User(
        row[0],
        row[1],
        Role(row[2]),
        bool(row[3]),
        when(row[4]),  # type: ignore[arg-type]
        when(row[5]),  # type: ignore[arg-type]
        when(row[6]),
    )


def _check_name(name: str) -> None:
    if not (1 <= len(name) <= MAX_USER_NAME) or not name.isprintable() or name != name.strip():
        raise ValueError("a user name is 1 to 64 printable characters, no outer spaces")


def add_user(name: str, password_hash: str, role: Role, now: dt.datetime) -> Transaction:
    _check_name(name)
    taken = yield Query("SELECT 1 FROM users WHERE name = ?", (name,))
    if taken:
        raise Conflict(f"a user {name!r} is already present")
    rows = yield Query(
        "INSERT INTO users (name, password, role, active, created, updated)"
        f" VALUES (?, ?, ?, ?, ?, ?) RETURNING {_USER_COLUMNS}",
        (name, password_hash, role.value, True, now, now),
    )
    return _user(rows[0])


def login_record(name: str) -> Transaction:
    """(user, password hash, end of a lock-out or None) of an active user, or None."""
    rows = yield Query(
        f"SELECT {_USER_COLUMNS}, password FROM users WHERE name = ? AND active = ?",
        (name, True),
    )
    if not rows:
        return None
    user = _user(rows[0])
    return user, rows[0][7], user.locked_until


def reserve_sign_in(user: User, by: Actor, now: dt.datetime) -> Transaction:
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
        return rows[0][0]
    yield from _lock_out(user, by, now, "active = ?", True)
    return None


def _lock_out(user: User, by: Actor, now: dt.datetime, where: str, value: Any) -> Transaction:
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


def sign_in_failed(user: User, by: Actor, now: dt.datetime, failures: int) -> Transaction:
    """A wrong password for ``user``, whose attempt :func:`reserve_sign_in` counted as the
    ``failures``-th in a row: audited; when :data:`LOCKOUT_FAILURES` are counted (some may
    still be under way) the user is locked out for :data:`LOCKOUT`, and the count starts
    again for when the lock ends."""
    yield from audit(by, "sign-in failed", None, f"{failures} in a row", now)
    yield from _lock_out(user, by, now, "failed_logins >= ?", LOCKOUT_FAILURES)


def signed_in(
    user: User, by: Actor, now: dt.datetime, password_hash: str | None = None
) -> Transaction:
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


def get_user(name: str) -> Transaction:
    rows = yield Query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
    return _user(rows[0]) if rows else None


def users() -> Transaction:
    rows = yield Query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")
    return [_user(row) for row in rows]


def update_user(
    name: str,
    now: dt.datetime,
    *,
    role: Role | None = None,
    active: bool | None = None,
    password_hash: str | None = None,
) -> Transaction:
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
    sets, params = ["updated = ?"], [now]
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
    return (yield from get_user(name))


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
) -> Transaction:
    """A signed-in browser of the active user ``name`` until ``now + ttl`` (at most ``now +
    lifetime``); sessions already over are deleted on the way."""
    if ttl <= dt.timedelta(0) or (lifetime is not None and lifetime <= dt.timedelta(0)):
        raise ValueError("a session lasts some time")
    yield Exec("DELETE FROM web_sessions WHERE expires < ?", (now,))
    rows = yield Query(
        f"SELECT {_USER_COLUMNS} FROM users WHERE name = ? AND active = ?", (name, True)
    )
    if not rows:
        raise UnknownUser(name)
    user = _user(rows[0])
    expires = now + (min(ttl, lifetime) if lifetime is not None else ttl)
    yield Exec(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, created, expires, address)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash(token), user.id, csrf, now, expires, address),
    )
    return WebSession(user, csrf, expires, address)


_SESSION_USER = ", ".join(f"u.{column}" for column in _USER_COLUMNS.split(", "))


def web_session(
    token: str,
    now: dt.datetime,
    ttl: dt.timedelta | None,
    lifetime: dt.timedelta | None = None,
) -> Transaction:
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
    expires: dt.datetime = when(rows[0][1])  # type: ignore[assignment]
    created: dt.datetime = when(rows[0][3])  # type: ignore[assignment]
    end = created + lifetime if lifetime is not None else None
    if end is not None and end <= now:
        yield Exec("DELETE FROM web_sessions WHERE token_hash = ?", (hashed,))
        return None
    if ttl is not None and expires - now < ttl / 2:
        expires = now + ttl if end is None else min(now + ttl, end)
        yield Exec("UPDATE web_sessions SET expires = ? WHERE token_hash = ?", (expires, hashed))
    return WebSession(_user(rows[0][4:]), csrf, expires, address)


def end_web_session(token: str) -> Transaction:
    yield Exec("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash(token),))
