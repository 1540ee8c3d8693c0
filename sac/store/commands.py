"""The command queue: commands for meters, queued (audited), claimed by the session that has
the meter on line, moved on to their end, each move in the command log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from zope.interface import Interface, implementer

from sac.errors import CommandStateError, InvalidRequest, UnknownCommand
from sac.store.audit import audited
from sac.store.model import Actor, Command, CommandState, CommandTransition
from sac.store.sql import Component, Exec, Query, Transaction, id_of, stamp, when

__all__ = ["SETTING_KINDS", "CommandsComponent", "ICommands"]

SETTING_KINDS = ("set-setting", "read-setting")  # the commands whose params name a setting


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
        created=stamp(row[6]),
        expires=when(row[7]),
        sent=when(row[8]),
        finished=when(row[9]),
        attempts=row[10],
        result=row[11],
        priority=row[12],
    )


def _log(
    ids: Sequence[int], state: CommandState, now: dt.datetime, detail: str | None
) -> Transaction[None]:
    """The transition of commands ``ids`` to ``state``, in the command log."""
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        yield Exec(
            "INSERT INTO command_log (command_id, at, state, detail)"
            f" SELECT id, ?, ?, ? FROM commands WHERE id IN ({', '.join('?' * len(part))})",
            [now, state.value, detail, *part],
        )


def command_history(command_id: int) -> Transaction[list[CommandTransition]]:
    """Every transition of a command, oldest first."""
    rows = yield Query(
        "SELECT at, state, detail FROM command_log WHERE command_id = ? ORDER BY id",
        (command_id,),
    )
    return [CommandTransition(stamp(at), CommandState(state), detail) for at, state, detail in rows]


def queue_command(
    ldn: str,
    kind: str,
    params: Mapping[str, Any],
    requested_by: str,
    expires: dt.datetime | None,
    now: dt.datetime,
    priority: int = 0,
) -> Transaction[Command]:
    """A new pending command for a meter; a higher ``priority`` runs first."""
    if expires is not None and expires <= now:
        raise InvalidRequest("a command's deadline must be in the future")
    meter_id = yield from id_of(ldn)
    rows = yield Query(
        "INSERT INTO commands (meter_id, kind, params, requested_by, created, expires, priority)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (meter_id, kind, json.dumps(params, sort_keys=True), requested_by, now, expires, priority),
    )
    yield from _log([rows[0][0]], CommandState.PENDING, now, f"queued by {requested_by}")
    return (yield from get_command(rows[0][0]))


def get_command(command_id: int) -> Transaction[Command]:
    rows = yield Query(f"SELECT {_COMMAND_COLUMNS} {_FROM_COMMANDS} WHERE c.id = ?", (command_id,))
    if not rows:
        raise UnknownCommand(command_id)
    return _command(rows[0])


def commands(
    ldn: str | None, states: Collection[CommandState] | None, limit: int
) -> Transaction[list[Command]]:
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


def _names(key: str) -> tuple[str, str]:
    """How the params of a command naming setting ``key`` are stored (:func:`queue_command`:
    JSON, keys sorted, ``setting`` the first of set-setting's and read-setting's): the whole
    of read-setting's, the start of set-setting's."""
    alone = json.dumps({"setting": key}, sort_keys=True)
    return alone, alone[:-1] + ", "


def setting_commands(
    ldn: str,
    keys: Collection[str],
    kinds: Mapping[str, str],
    states: Collection[CommandState] | None,
) -> Transaction[dict[str, Command]]:
    """{setting: its newest command} of one meter: of the set-setting and read-setting
    commands naming each of ``keys``, and of the commands of each of ``kinds`` (a kind
    without parameters that writes one setting: {kind: setting}); only those in ``states``
    when given."""
    state = f" AND state IN ({', '.join('?' * len(states))})" if states else ""
    state_values = [s.value for s in states or ()]
    parts: list[str] = []
    params: list[Any] = []
    meter = "(SELECT id FROM meters WHERE ldn = ?)"
    head = f"SELECT * FROM (SELECT ? AS k, id FROM commands WHERE meter_id = {meter}{state}"
    for i, key in enumerate(sorted(set(keys))):
        alone, start = _names(key)
        parts.append(
            f"{head} AND kind IN (?, ?) AND (params = ? OR substr(params, 1, ?) = ?)"
            f" ORDER BY id DESC LIMIT 1) s{i}"
        )
        params += [key, ldn, *state_values, *SETTING_KINDS, alone, len(start), start]
    for i, (kind, key) in enumerate(sorted(kinds.items())):
        parts.append(f"{head} AND kind = ? ORDER BY id DESC LIMIT 1) k{i}")
        params += [key, ldn, *state_values, kind]
    if not parts:
        return {}
    rows = yield Query(
        f"SELECT x.k, {_COMMAND_COLUMNS} {_FROM_COMMANDS}"
        f" JOIN ({' UNION ALL '.join(parts)}) x ON x.id = c.id ORDER BY c.id",
        params,
    )
    return {row[0]: _command(row[1:]) for row in rows}  # by id: the newest wins


def claim_commands(ldn: str, now: dt.datetime, by: str | None = None) -> Transaction[list[Command]]:
    """The meter's pending commands, highest priority then oldest first, now ``sent``
    (claimed by this session, ``by``: which process);
    those past their deadline become ``expired`` instead.  Rows another process is claiming
    are skipped, so two processes never run one command."""
    meter_id = yield from id_of(ldn)
    rows = yield Query(
        "SELECT id, expires FROM commands WHERE meter_id = ? AND state = 'pending'"
        " ORDER BY priority DESC, id",
        (meter_id,),
        lock=True,
    )
    late = [i for i, expires in rows if expires is not None and stamp(expires) <= now]
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


def _move(
    ids: Sequence[int], state: CommandState, now: dt.datetime, stamp: str
) -> Transaction[None]:
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
) -> Transaction[Command]:
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


def expire_commands(now: dt.datetime) -> Transaction[int]:
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
    return int(count)


def requeue_stale_commands(sent_before: dt.datetime, now: dt.datetime) -> Transaction[int]:
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
    return int(count)


class ICommands(Interface):
    async def queue(
        ldn: str,
        kind: str,
        params: Mapping[str, Any],
        by: Actor,
        expires: dt.datetime | None = None,
        priority: int = 0,
        detail: str | None = None,
    ) -> Command:
        """Queue a command for a meter (pending), audited (with ``detail``: what it does, in
        words, never a secret); higher priorities run first."""

    async def get(command_id: int) -> Command:
        """A command; UnknownCommand if none."""

    async def recent(
        ldn: str | None = None, states: Collection[CommandState] | None = None, limit: int = 100
    ) -> list[Command]:
        """Commands, newest first."""

    async def latest_by_setting(
        ldn: str,
        keys: Collection[str],
        kinds: Mapping[str, str] | None = None,
        states: Collection[CommandState] | None = None,
    ) -> dict[str, Command]:
        """{setting: the newest command of a meter naming it}, in one query: the set-setting
        and read-setting commands naming each of ``keys``, and the commands of each of
        ``kinds`` ({kind: the setting it writes}, e.g. sync-clock: clock); of ``states``
        only, when given.  A setting without one is absent."""

    async def claim(ldn: str, by: str | None = None) -> list[Command]:
        """A meter's pending commands, now sent, highest priority first: for the session
        that has the meter on line (``by`` names it in the command log).  Expired ones are
        marked so; another process's claims are skipped."""

    async def history(command_id: int) -> list[CommandTransition]:
        """Every transition of a command with its time, oldest first."""

    async def finish(command_id: int, ok: bool, result: str | None = None) -> Command:
        """A sent command is done (``ok``) or failed, with the meter's answer."""

    async def retry(command_id: int, reason: str) -> Command:
        """A sent command goes back to pending, for the meter's next session."""

    async def cancel(command_id: int, by: Actor) -> Command:
        """Cancel a pending command, audited; CommandStateError once it is sent."""

    async def expire() -> int:
        """Mark the pending commands past their deadline expired; how many."""

    async def requeue_stale(older_than: dt.timedelta) -> int:
        """Sent commands left by a dead process go back to pending; how many."""


@implementer(ICommands)
class CommandsComponent(Component):
    async def queue(
        self,
        ldn: str,
        kind: str,
        params: Mapping[str, Any],
        by: Actor,
        expires: dt.datetime | None = None,
        priority: int = 0,
        detail: str | None = None,
    ) -> Command:
        now = self.db.now()
        change = queue_command(ldn, kind, params, by.name, expires, now, priority)
        return await self.db.run(audited(change, by, f"queue {kind}", ldn, now, detail))

    async def get(self, command_id: int) -> Command:
        return await self.db.run(get_command(command_id))

    async def recent(
        self,
        ldn: str | None = None,
        states: Collection[CommandState] | None = None,
        limit: int = 100,
    ) -> list[Command]:
        return await self.db.run(commands(ldn, states, limit))

    async def latest_by_setting(
        self,
        ldn: str,
        keys: Collection[str],
        kinds: Mapping[str, str] | None = None,
        states: Collection[CommandState] | None = None,
    ) -> dict[str, Command]:
        return await self.db.run(setting_commands(ldn, keys, kinds or {}, states))

    async def claim(self, ldn: str, by: str | None = None) -> list[Command]:
        return await self.db.run(claim_commands(ldn, self.db.now(), by))

    async def history(self, command_id: int) -> list[CommandTransition]:
        return await self.db.run(command_history(command_id))

    async def finish(self, command_id: int, ok: bool, result: str | None = None) -> Command:
        to = CommandState.DONE if ok else CommandState.FAILED
        return await self.db.run(move_command(command_id, to, result, self.db.now()))

    async def retry(self, command_id: int, reason: str) -> Command:
        return await self.db.run(
            move_command(command_id, CommandState.PENDING, reason, self.db.now())
        )

    async def cancel(self, command_id: int, by: Actor) -> Command:
        now = self.db.now()
        change = move_command(command_id, CommandState.CANCELLED, f"by {by.name}", now)
        return await self.db.run(audited(change, by, "cancel command", str(command_id), now))

    async def expire(self) -> int:
        return await self.db.run(expire_commands(self.db.now()))

    async def requeue_stale(self, older_than: dt.timedelta) -> int:
        now = self.db.now()
        return await self.db.run(requeue_stale_commands(now - older_than, now))
