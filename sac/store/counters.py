"""Invocation counters: ours (reserved before they are sent, proven when the meter showed it
accepted one) and the meter's (each newer than the last, else a replay)."""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import Interface, implementer

from sac.errors import ReplayError, StorageError
from sac.store.audit import audited
from sac.store.model import Actor, InvocationCounters, PeerCounter
from sac.store.sql import Component, Exec, InsertRows, Query, Transaction, id_of

__all__ = ["CountersComponent", "ICounters", "accept_counters"]


def reserve_invocation_counters(ldn: str, client_sap: int, count: int) -> Transaction[int]:
    """Reserve the next ``count`` counters of ours: the first one.  Stored before it is used,
    in one statement, so a restart never sends a counter twice."""
    if count < 1:
        raise ValueError("reserve at least one counter")
    meter_id = yield from id_of(ldn)
    rows = yield Query(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap)"
        " DO UPDATE SET ours = invocation_counters.ours + excluded.ours RETURNING ours",
        (meter_id, client_sap, count),
    )
    last = int(rows[0][0])
    if last > 0xFFFFFFFF:
        raise StorageError(f"the invocation counters of {ldn} are exhausted: renew the key")
    return last - count + 1


def _check_counter(value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"an invocation counter is 0..2^32-1, not {value}")


def raise_invocation_counter(ldn: str, client_sap: int, used: int) -> Transaction[None]:
    """Reserve above ``used``: our next counter is sent above it (reserved before it is sent,
    as every counter).  Callers bound ``used`` (see MeterSession): a counter an
    unauthenticated answer asked for is not proven by this."""
    _check_counter(used)
    meter_id = yield from id_of(ldn)
    yield Exec(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET ours = excluded.ours"
        " WHERE invocation_counters.ours < excluded.ours",
        (meter_id, client_sap, used),
    )


def prove_invocation_counter(ldn: str, client_sap: int, accepted: int) -> Transaction[None]:
    """The meter has proven, by authenticated data, that it accepted our counter
    ``accepted``: the proven mark moves up to it (and the reservation with it)."""
    _check_counter(accepted)
    meter_id = yield from id_of(ldn)
    yield Exec(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours, proven) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET"
        " ours = CASE WHEN invocation_counters.ours < excluded.ours"
        " THEN excluded.ours ELSE invocation_counters.ours END,"
        " proven = CASE WHEN invocation_counters.proven < excluded.proven"
        " THEN excluded.proven ELSE invocation_counters.proven END",
        (meter_id, client_sap, accepted, accepted),
    )


def reset_invocation_counters(ldn: str) -> Transaction[int]:
    """Forget every counter of a meter (all its clients), after its keys were changed in
    the field; how many clients had counters."""
    meter_id = yield from id_of(ldn)
    count = yield Exec("DELETE FROM invocation_counters WHERE meter_id = ?", (meter_id,))
    return int(count)


def accept_peer_counter(ldn: str, client_sap: int, counter: int) -> Transaction[bool]:
    """Record the meter's counter if it is newer than the last one: True, else False
    (a replay).  The check and the write are one statement."""
    meter_id = yield from id_of(ldn)
    return (yield from _accept_counter(meter_id, client_sap, counter))


def _accept_counter(meter_id: int, client_sap: int, counter: int) -> Transaction[bool]:
    rows = yield Query(
        "INSERT INTO invocation_counters (meter_id, client_sap, theirs) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET theirs = excluded.theirs"
        " WHERE invocation_counters.theirs IS NULL OR invocation_counters.theirs < excluded.theirs"
        " RETURNING theirs",
        (meter_id, client_sap, counter),
    )
    return bool(rows)


def invocation_counters(ldn: str, client_sap: int) -> Transaction[tuple[int, int | None]]:
    """(ours: the last reserved, theirs: the last accepted or None)."""
    state = yield from counter_state(ldn, client_sap)
    return state.ours, state.theirs


def counter_state(ldn: str, client_sap: int) -> Transaction[InvocationCounters]:
    """A meter's InvocationCounters for a client (zeros before any)."""
    rows = yield Query(
        "SELECT c.ours, c.proven, c.theirs FROM invocation_counters c"
        " JOIN meters m ON m.id = c.meter_id WHERE m.ldn = ? AND c.client_sap = ?",
        (ldn, client_sap),
    )
    return InvocationCounters(*rows[0]) if rows else InvocationCounters()


_COUNTER_COLUMNS = (("meter_id", "int"), ("client_sap", "int"), ("theirs", "int"))


def accept_counters(counters: Sequence[PeerCounter], ids: dict[str, int]) -> Transaction[None]:
    """Accept every counter (each newer than its meter's last) or raise ReplayError: one
    statement for all, when no meter and client appear twice (one at a time otherwise)."""
    if not counters:
        return
    rows = sorted((ids[c.ldn], c.client_sap, c.counter) for c in counters)  # one lock order
    if len({(m, sap) for m, sap, _ in rows}) == len(rows):
        accepted = yield InsertRows(
            "invocation_counters",
            _COUNTER_COLUMNS,
            rows,
            conflict="(meter_id, client_sap) DO UPDATE SET theirs = excluded.theirs"
            " WHERE invocation_counters.theirs IS NULL"
            " OR invocation_counters.theirs < excluded.theirs",
            returning="meter_id, client_sap",
        )
        if len(accepted) == len(rows):
            return
        taken = {(m, sap) for m, sap in accepted}
        stale = next(r for r in rows if (r[0], r[1]) not in taken)
    else:
        for row in rows:
            if not (yield from _accept_counter(*row)):
                stale = row
                break
        else:
            return
    theirs = yield Query(
        "SELECT theirs FROM invocation_counters WHERE meter_id = ? AND client_sap = ?",
        stale[:2],
    )
    last = theirs[0][0] if theirs and theirs[0][0] is not None else -1
    raise ReplayError(stale[2], last)


class ICounters(Interface):
    async def reserve(ldn: str, client_sap: int, count: int = 1) -> int:
        """The first of ``count`` counters of ours, stored as used before they are."""

    async def raise_ours(ldn: str, client_sap: int, used: int) -> None:
        """Reserve above ``used`` from now on (the caller bounds it: see MeterSession)."""

    async def prove(ldn: str, client_sap: int, accepted: int) -> None:
        """The meter proved, by authenticated data, that it accepted our counter
        ``accepted``: the proven mark (and the reservation) move up to it."""

    async def state(ldn: str, client_sap: int) -> InvocationCounters:
        """The meter's counters for a client: ours reserved, ours proven, theirs."""

    async def reset(ldn: str, by: Actor | None = None) -> int:
        """Forget a meter's counters (every client), audited: after its keys were changed
        in the field.  How many clients had counters; UnknownMeter."""

    async def accept_theirs(ldn: str, client_sap: int, counter: int) -> bool:
        """Record the meter's counter when newer than the last: False for a replay."""

    async def last(ldn: str, client_sap: int) -> tuple[int, int | None]:
        """(the last of ours reserved, the last of theirs accepted)."""


@implementer(ICounters)
class CountersComponent(Component):
    async def reserve(self, ldn: str, client_sap: int, count: int = 1) -> int:
        return await self.db.run(reserve_invocation_counters(ldn, client_sap, count))

    async def raise_ours(self, ldn: str, client_sap: int, used: int) -> None:
        await self.db.run(raise_invocation_counter(ldn, client_sap, used))

    async def prove(self, ldn: str, client_sap: int, accepted: int) -> None:
        await self.db.run(prove_invocation_counter(ldn, client_sap, accepted))

    async def state(self, ldn: str, client_sap: int) -> InvocationCounters:
        return await self.db.run(counter_state(ldn, client_sap))

    async def reset(self, ldn: str, by: Actor | None = None) -> int:
        now = self.db.now()
        change = reset_invocation_counters(ldn)
        return await self.db.run(audited(change, by, "reset counters", ldn, now))

    async def accept_theirs(self, ldn: str, client_sap: int, counter: int) -> bool:
        return await self.db.run(accept_peer_counter(ldn, client_sap, counter))

    async def last(self, ldn: str, client_sap: int) -> tuple[int, int | None]:
        return await self.db.run(invocation_counters(ldn, client_sap))
