"""Connections: one row a session with a meter -- a push (the meter called in) or a poll (the
SAC dialled it) -- with its start, peer, outcome and duration, what it read beyond the push
frame, and what it could not read or why it was refused.  The push path hands them over in
batches (:class:`sac.services.connections.ConnectionLog`), never one transaction a session.

A connection of no meter the store knows (an unknown system title, a connection that never
pushed) is kept without one: its peer says where it came from."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zope.interface import Interface, implementer

from sac.errors import BadCursor

# the exports' keyset paging: their range and cursor checks
from sac.store.exports import (
    _check,
    _fingerprint,
    _instant,
    _row_id,
    decode_cursor,
    encode_cursor,
)
from sac.store.sql import (
    BATCH_ROWS,
    Component,
    Exec,
    InsertRows,
    Query,
    Transaction,
    id_of,
    ids_of,
    stamp,
)

__all__ = [
    "MAX_ID_CACHE",
    "PRUNE_ROWS",
    "Connection",
    "ConnectionPage",
    "ConnectionsComponent",
    "IConnections",
]

KINDS = ("push", "poll")
# characters kept of what comes from outside: an outcome, a detail, each item read or skipped
LIMITS = {"peer": 64, "outcome": 64, "detail": 2000, "item": 300}
MAX_ITEMS = 200  # items kept of a session's read or skipped lists
MAX_ID_CACHE = 200_000  # the connector's {LDN: id} cache is dropped beyond (as the ingest's)


@dataclass(frozen=True, slots=True)
class Connection:
    """One session with a meter.  ``ldn``: the meter (None: none made out; a row added for
    an LDN the store does not know keeps no meter either); ``read``: the quantities read
    beyond the push frame; ``skipped``: what could not be read, each with why; ``detail``:
    why the session was refused or failed, or a note on its end."""

    ldn: str | None
    started: dt.datetime
    peer: str
    kind: str  # push or poll
    outcome: str
    duration_ms: int
    read: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    """A page of a meter's connections in the order they started; ``cursor`` continues it."""

    connections: tuple[Connection, ...]
    cursor: str | None


_COLUMNS = (
    ("meter_id", "int"),
    ("started", "time"),
    ("peer", "text"),
    ("kind", "text"),
    ("outcome", "text"),
    ("duration_ms", "int"),
    ("read", "text"),
    ("skipped", "text"),
    ("detail", "text"),
)
_SELECT = "c.id, c.started, c.peer, c.kind, c.outcome, c.duration_ms, c.read, c.skipped, c.detail"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _items(items: Sequence[str]) -> str:
    if not items:  # most sessions: a push stored, nothing read beyond it
        return "[]"
    kept = [_clip(item, LIMITS["item"]) for item in items[:MAX_ITEMS]]
    if len(items) > MAX_ITEMS:
        kept.append(f"\u2026 and {len(items) - MAX_ITEMS} more")
    return json.dumps(kept, ensure_ascii=False)


def _row(c: Connection, meter_id: int | None) -> tuple[Any, ...]:
    if c.kind not in KINDS:
        raise ValueError(f"a connection is a push or a poll, not {c.kind!r}")
    return (
        meter_id,
        c.started,
        _clip(c.peer, LIMITS["peer"]),
        c.kind,
        _clip(c.outcome, LIMITS["outcome"]),
        max(0, c.duration_ms),
        _items(c.read),
        _items(c.skipped),
        None if c.detail is None else _clip(c.detail, LIMITS["detail"]),
    )


def add_connections(connections: Sequence[Connection], ids: dict[str, int]) -> Transaction[int]:
    """Store ``connections`` in one statement a few hundred; an LDN the store does not know
    keeps no meter.  ``ids``: the caller's {LDN: meter id} cache, taught what it lacked."""
    unknown = {c.ldn for c in connections if c.ldn is not None} - ids.keys()
    if unknown:
        ids.update((yield from ids_of(unknown)))
    rows = [_row(c, ids.get(c.ldn) if c.ldn is not None else None) for c in connections]
    added = 0
    for i in range(0, len(rows), BATCH_ROWS):
        added += yield InsertRows("connections", _COLUMNS, rows[i : i + BATCH_ROWS])
    return added


def _connection(ldn: str, row: Sequence[Any]) -> Connection:
    _, started, peer, kind, outcome, duration, read, skipped, detail = row
    return Connection(
        ldn,
        stamp(started),
        peer,
        kind,
        outcome,
        int(duration),
        tuple(json.loads(read)),
        tuple(json.loads(skipped)),
        detail,
    )


def recent(ldn: str, limit: int) -> Transaction[list[Connection]]:
    """A meter's latest connections, newest first; UnknownMeter for an unknown LDN."""
    meter_id = yield from id_of(ldn)
    rows = yield Query(
        f"SELECT {_SELECT} FROM connections c WHERE c.meter_id = ?"
        " ORDER BY c.started DESC, c.id DESC LIMIT ?",
        (meter_id, limit),
    )
    return [_connection(ldn, row) for row in rows]


def connections_page(
    ldn: str, start: dt.datetime, end: dt.datetime, cursor: str | None, limit: int
) -> Transaction[ConnectionPage]:
    """A meter's connections started in [start, end), in the order they started; UnknownMeter
    for an unknown LDN, InvalidRequest for a bad range or size, BadCursor for a cursor not of
    this query (keyset paging, as the exports: :mod:`sac.store.exports`)."""
    _check(start, end, limit)
    fingerprint = _fingerprint("c", ldn, start.isoformat(), end.isoformat())
    where = ["c.meter_id = ?", "c.started >= ?", "c.started < ?"]
    params: list[Any] = [(yield from id_of(ldn)), start, end]
    if cursor is not None:
        started_text, id_text = decode_cursor(cursor, "c", fingerprint, 2)
        try:
            started, row_id = _instant(started_text), _row_id(id_text)
        except ValueError:
            raise BadCursor("not a cursor of this export") from None
        where.append("(c.started > ? OR (c.started = ? AND c.id > ?))")
        params += [started, started, row_id]
    rows = yield Query(
        f"SELECT {_SELECT} FROM connections c WHERE {' AND '.join(where)}"
        " ORDER BY c.started, c.id LIMIT ?",
        [*params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor("c", fingerprint, stamp(last[1]).isoformat(), last[0])
    return ConnectionPage(tuple(_connection(ldn, row) for row in rows), next_cursor)


PRUNE_ROWS = 10_000  # rows forgotten a transaction: a short one, however much is due


def prune(before: dt.datetime, limit: int) -> Transaction[int]:
    """Forget up to ``limit`` of the connections started before ``before``; how many."""
    count = yield Exec(
        "DELETE FROM connections WHERE id IN"
        " (SELECT id FROM connections WHERE started < ? LIMIT ?)",
        (before, limit),
    )
    return int(count)


class IConnections(Interface):
    async def add(connections: Sequence[Connection]) -> int:
        """Store a batch of connections in one transaction; how many."""

    async def recent(ldn: str, limit: int = 20) -> list[Connection]:
        """A meter's latest connections, newest first; UnknownMeter for an unknown LDN."""

    async def page(
        ldn: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ConnectionPage:
        """A meter's connections started in [start, end), oldest first, a page at a time:
        pass the page's cursor for the next one."""

    async def prune(older_than: dt.timedelta) -> int:
        """Forget the connections started longer ago than ``older_than`` (in slices of
        :data:`PRUNE_ROWS` a transaction); how many."""


@implementer(IConnections)
class ConnectionsComponent(Component):
    async def add(self, connections: Sequence[Connection]) -> int:
        if not connections:
            return 0
        if len(self.db.meter_ids) > MAX_ID_CACHE:
            self.db.meter_ids.clear()
        return await self.db.run(add_connections(connections, self.db.meter_ids))

    async def recent(self, ldn: str, limit: int = 20) -> list[Connection]:
        return await self.db.run(recent(ldn, limit))

    async def page(
        self,
        ldn: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ConnectionPage:
        return await self.db.run(connections_page(ldn, start, end, cursor, limit))

    async def prune(self, older_than: dt.timedelta) -> int:
        before, total = self.db.now() - older_than, 0
        while True:  # a transaction a slice: the push path's writes never wait long
            count = await self.db.run(prune(before, PRUNE_ROWS))
            total += count
            if count < PRUNE_ROWS:
                return total
