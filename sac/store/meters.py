"""Meters: each one's row (identity, address, allowlist, state, the list values sessions
bring), found by LDN, system title or address; polls leased; the meter list; provisioning."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from zope.interface import Interface, implementer

from sac.errors import ConfigurationError, Conflict, SecurityError, UnknownMeter
from sac.keys import MasterKey, key_place
from sac.store import meterlist
from sac.store import provisioning as prov
from sac.store.audit import audited
from sac.store.keys import check_keys, write_keys
from sac.store.model import (
    Actor,
    Meter,
    MeterKeys,
    MeterPage,
    MeterQuery,
    MeterState,
    NewMeter,
    PollJob,
)
from sac.store.rows import METER_COLUMNS, meter_row
from sac.store.sql import BATCH_ROWS, Component, Exec, Query, Transaction

__all__ = ["IMeters", "MetersComponent", "PushKeys"]

T = TypeVar("T")


def add_meter(
    meter: NewMeter,
    now: dt.datetime,
    master: MasterKey | None = None,
    keys: Mapping[int, tuple[bytes, bytes | None]] = {},
) -> Transaction[Meter]:
    """A new meter, with its keys ({client SAP: (EK, AK or None: the EK)}) wrapped under
    ``master``: the row and the keys together or neither."""
    for ek, ak in keys.values():
        check_keys(ek, ak)
    if keys and master is None:
        raise ConfigurationError(
            "meter keys need a master key (SAC_MASTER_KEY or [store] master_key_file)"
        )
    taken = yield Query(
        "SELECT ldn FROM meters WHERE ldn = ? OR system_title = ?", (meter.ldn, meter.system_title)
    )
    if taken:
        what = "LDN" if taken[0][0] == meter.ldn else "system title"
        raise Conflict(f"a meter with this {what} is already present ({taken[0][0]})")
    rows = yield Query(
        "INSERT INTO meters (ldn, pdr, system_title, profile, address, allowed_ips, created,"
        f" updated, poll_interval) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {METER_COLUMNS}",
        (
            meter.ldn,
            meter.pdr,
            meter.system_title,
            meter.profile,
            meter.address,
            ",".join(meter.allowed_ips),
            now,
            now,
            meter.poll_interval,
        ),
    )
    added = meter_row(rows[0])
    if master is not None:
        for sap, (ek, ak) in sorted(keys.items()):
            yield from write_keys(master, added.id, meter.ldn, sap, ek, ak, now, held={})
    return added


def claim_polls(
    now: dt.datetime, limit: int, lease_until: dt.datetime
) -> Transaction[list[PollJob]]:
    """Up to ``limit`` active meters with an address whose poll is due, leased to this
    process until ``lease_until`` (another process's claims are skipped; a poll never
    finished is due again when its lease ends)."""
    rows = yield Query(
        "SELECT id, ldn, address, poll_interval, poll_failures FROM meters"
        " WHERE address IS NOT NULL AND address <> '' AND state = 'active'"
        " AND (next_poll IS NULL OR next_poll <= ?)"
        " ORDER BY next_poll IS NOT NULL, next_poll LIMIT ?",
        (now, limit),
        lock=True,
    )
    if not rows:
        return []
    ids = [row[0] for row in rows]
    yield Exec(
        f"UPDATE meters SET next_poll = ? WHERE id IN ({', '.join('?' * len(ids))})",
        [lease_until, *ids],
    )
    return [
        PollJob(ldn, address, interval, failures) for _, ldn, address, interval, failures in rows
    ]


def finish_poll(ldn: str, next_poll: dt.datetime, failures: int) -> Transaction[None]:
    """A poll ended: the next one is due at ``next_poll``; ``failures`` in a row so far."""
    yield Exec(
        "UPDATE meters SET next_poll = ?, poll_failures = ? WHERE ldn = ?",
        (next_poll, failures, ldn),
    )


def get_meter(ldn: str) -> Transaction[Meter | None]:
    rows = yield Query(f"SELECT {METER_COLUMNS} FROM meters WHERE ldn = ?", (ldn,))
    return meter_row(rows[0]) if rows else None


def meter_by_system_title(title: bytes) -> Transaction[Meter | None]:
    rows = yield Query(f"SELECT {METER_COLUMNS} FROM meters WHERE system_title = ?", (title,))
    return meter_row(rows[0]) if rows else None


#: a meter's keys by client, in clear, or why they do not unwrap (:func:`meters_for_pushes`)
PushKeys = dict[int, MeterKeys | SecurityError]

_PUSH_METER_COLUMNS = ", ".join(f"m.{c.strip()}" for c in METER_COLUMNS.split(","))


def meters_for_pushes(
    master: MasterKey | None, titles: Collection[bytes], client_saps: Collection[int]
) -> Transaction[dict[bytes, tuple[Meter, PushKeys]]]:
    """{system title: (meter, {client SAP: its keys, unwrapped})} of the meters among
    ``titles``, with their keys of the clients ``client_saps`` (a push's Management client:
    the installed profiles'), one statement a few hundred titles; a title no meter has is
    absent, a meter without keys has none.  The keys are unwrapped here, once a lookup; a
    key that does not unwrap (damaged, another master key) is its error, in its place."""
    wanted, saps = sorted(set(titles)), sorted(set(client_saps))
    found: dict[bytes, tuple[Meter, PushKeys]] = {}
    for i in range(0, len(wanted), BATCH_ROWS):
        part = wanted[i : i + BATCH_ROWS]
        rows = yield Query(
            f"SELECT {_PUSH_METER_COLUMNS}, k.client_sap, k.role, k.wrapped FROM meters m"
            " LEFT JOIN meter_keys k ON k.meter_id = m.id"
            f" AND k.client_sap IN ({', '.join('?' * len(saps)) or 'NULL'})"
            f" WHERE m.system_title IN ({', '.join('?' * len(part))})",
            [*saps, *part],
        )
        wrapped: dict[bytes, dict[int, dict[str, bytes]]] = {}
        for row in rows:
            title = bytes(row[3])
            if title not in found:
                found[title] = (meter_row(row), {})
                wrapped[title] = {}
            if row[-3] is not None:
                wrapped[title].setdefault(int(row[-3]), {})[row[-2]] = bytes(row[-1])
        for title, by_sap in wrapped.items():
            meter, keys = found[title]
            for sap, roles in by_sap.items():
                try:
                    keys[sap] = _unwrapped(master, meter.ldn, sap, roles)
                except SecurityError as exc:  # this meter's alone: the others go on
                    keys[sap] = exc
    return found


def _unwrapped(master: MasterKey | None, ldn: str, sap: int, roles: dict[str, bytes]) -> MeterKeys:
    if master is None:
        raise ConfigurationError(
            "meter keys need a master key (SAC_MASTER_KEY or [store] master_key_file)"
        )
    keys = {role: master.unwrap(blob, key_place(ldn, sap, role)) for role, blob in roles.items()}
    return MeterKeys(keys["ek"], keys.get("ak", keys["ek"]))


def meters_by_ip(ip: str) -> Transaction[list[Meter]]:
    """The meters whose allowlist holds the address ``ip`` (how a push with an empty system
    title is identified)."""
    if not ip or "," in ip or "%" in ip or "_" in ip:
        return []
    rows = yield Query(
        f"SELECT {METER_COLUMNS} FROM meters WHERE ',' || allowed_ips || ',' LIKE ?",
        (f"%,{ip},%",),
    )
    return [meter_row(row) for row in rows]


def push_candidates(ip: str, limit: int) -> Transaction[list[Meter]]:
    """The meters (with a system title) a push without one from ``ip`` may come from, at
    most ``limit``: those whose allowlist holds ``ip``, then those with no allowlist that
    were last heard from ``ip``, the latest first."""
    if not ip or "," in ip or "%" in ip or "_" in ip or limit < 1:
        return []
    rows = yield Query(
        f"SELECT {METER_COLUMNS} FROM meters WHERE system_title IS NOT NULL"
        " AND (',' || allowed_ips || ',' LIKE ? OR (allowed_ips = '' AND last_address = ?))"
        " ORDER BY CASE WHEN allowed_ips = '' THEN 1 ELSE 0 END,"
        " last_connection IS NULL, last_connection DESC, ldn LIMIT ?",
        (f"%,{ip},%", ip, limit),
    )
    return [meter_row(row) for row in rows]


def known_meters(limit: int) -> Transaction[list[tuple[str, bytes, tuple[str, ...]]]]:
    """(LDN, system title, allowlist) of up to ``limit`` active meters with a system title,
    the latest heard first: what the push path may spool pushes of while the store is away."""
    rows = yield Query(
        "SELECT ldn, system_title, allowed_ips FROM meters"
        " WHERE state = 'active' AND system_title IS NOT NULL"
        " ORDER BY last_connection IS NULL, last_connection DESC, ldn LIMIT ?",
        (limit,),
    )
    return [
        (ldn, bytes(title), tuple(ip for ip in ips.split(",") if ip)) for ldn, title, ips in rows
    ]


def set_meter_state(ldn: str, state: MeterState, now: dt.datetime) -> Transaction[None]:
    count = yield Exec(
        "UPDATE meters SET state = ?, updated = ? WHERE ldn = ?", (state.value, now, ldn)
    )
    if not count:
        raise UnknownMeter(ldn)


KeysSpec = Mapping[int, tuple[bytes, bytes | None]]  # {client SAP: (EK, AK or None: the EK)}


def profiles_of(ldns: Sequence[str]) -> Transaction[dict[str, str]]:
    """{LDN: profile} of the meters among ``ldns``."""
    if not ldns:
        return {}
    rows = yield Query(
        f"SELECT ldn, profile FROM meters WHERE ldn IN ({', '.join('?' * len(ldns))})", ldns
    )
    return {str(ldn): str(profile) for ldn, profile in rows}


class IMeters(Interface):
    async def add(
        meter: NewMeter,
        by: Actor | None = None,
        *,
        keys: Mapping[int, tuple[bytes, bytes | None]] = {},
    ) -> Meter:
        """Add a meter, with its keys ({client SAP: (EK, AK or None: the EK)}) in the same
        transaction; Conflict when its LDN or system title is taken."""

    async def get(ldn: str) -> Meter | None:
        """The meter with this LDN."""

    async def by_system_title(title: bytes) -> Meter | None:
        """The meter with this system title (how a push is identified)."""

    async def for_pushes(
        titles: Collection[bytes], client_saps: Collection[int]
    ) -> dict[bytes, tuple[Meter, PushKeys]]:
        """{system title: (meter, {client SAP: keys in clear, or why they do not unwrap})}
        of the meters among ``titles`` and their keys of ``client_saps``: the pushes of many
        sessions identified in one statement, outside any transaction (it only reads); the
        meters' ids taught to the ingest path, which then looks none up."""

    async def by_ip(ip: str) -> list[Meter]:
        """The meters whose allowlist holds ``ip`` (a push with an empty system title)."""

    async def push_candidates(ip: str, limit: int) -> list[Meter]:
        """The meters a push without system title from ``ip`` may come from, at most
        ``limit``: those whose allowlist holds ``ip`` first, then those without allowlist
        last heard from ``ip`` (most recent first); only meters with a system title."""

    async def known(limit: int) -> list[tuple[str, bytes, tuple[str, ...]]]:
        """(LDN, system title, allowlist) of up to ``limit`` active meters with a system
        title, the latest heard first."""

    async def claim_polls(limit: int, lease: dt.timedelta) -> list[PollJob]:
        """Meters with an address due for a poll, leased to this process for ``lease``."""

    async def finish_poll(ldn: str, next_poll: dt.datetime, failures: int) -> None:
        """Record a poll's end: when the next is due, failures in a row."""

    async def set_state(ldn: str, state: MeterState, by: Actor | None = None) -> None:
        """Enable or disable a meter."""

    async def page(
        after: str | None = None,
        limit: int = 50,
        state: MeterState | None = None,
        search: str | None = None,
        *,
        query: MeterQuery | None = None,
    ) -> MeterPage:
        """A page of the meter list after the cursor ``after`` (a page's ``next_after``; in
        LDN order, an LDN); BadCursor for a cursor that is not one.  ``query`` filters and
        sorts (it supersedes ``state`` and ``search``: a prefix of the LDN or of the PDR);
        without it, LDN order."""

    async def count(state: MeterState | None = None, *, query: MeterQuery | None = None) -> int:
        """How many meters (of a state, or that ``query``'s filters keep)."""

    async def heard_since(since: dt.datetime) -> int:
        """How many meters were heard at ``since`` or later."""

    async def profiles(ldns: Collection[str]) -> dict[str, str]:
        """{LDN: profile name} of the meters among ``ldns`` (one query; unknown ones absent)."""

    async def update(ldn: str, changes: Mapping[str, Any], by: Actor | None = None) -> Meter:
        """Change some of a meter's fields (METER_FIELDS, ``state``), audited; UnknownMeter,
        Conflict (a system title taken), ValueError (a bad value)."""

    async def delete(ldn: str, by: Actor | None = None, purge: bool = False) -> None:
        """Remove a meter, audited; Conflict if it has history, unless ``purge``."""

    async def add_many(
        meters: Sequence[tuple[NewMeter, KeysSpec]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        """Add every meter with its keys, or none: BulkError {position: reason}.
        ``check_only``: the same refusals, nothing written (an empty list when none)."""

    async def update_many(
        items: Sequence[tuple[str, Mapping[str, Any]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        """Change many meters (fields, ``state`` and ``keys``: {SAP: (EK, AK or None)}), all
        or none: BulkError {position: reason}."""

    async def delete_many(
        ldns: Sequence[str],
        by: Actor | None = None,
        purge: bool = False,
        *,
        check_only: bool = False,
    ) -> None:
        """Remove many meters, all or none: BulkError {position: reason}."""


@implementer(IMeters)
class MetersComponent(Component):
    async def add(
        self,
        meter: NewMeter,
        by: Actor | None = None,
        *,
        keys: Mapping[int, tuple[bytes, bytes | None]] = {},
    ) -> Meter:
        now = self.db.now()
        master = self.db.master_key() if keys else None
        change = add_meter(meter, now, master, keys)
        detail = f"keys for client {', '.join(map(str, sorted(keys)))}" if keys else None
        return await self.db.change(
            audited(change, by, "add meter", meter.ldn, now, detail), [meter.ldn]
        )

    async def get(self, ldn: str) -> Meter | None:
        return await self.db.run(get_meter(ldn))

    async def by_system_title(self, title: bytes) -> Meter | None:
        return await self.db.run(meter_by_system_title(title))

    async def for_pushes(
        self, titles: Collection[bytes], client_saps: Collection[int]
    ) -> dict[bytes, tuple[Meter, PushKeys]]:
        changes = self.db.meter_changes
        lookup = meters_for_pushes(self.db.master_key_if_set(), titles, client_saps)
        found = await self.db.run(lookup, atomic=False)
        if changes == self.db.meter_changes:  # (else a meter may have been renumbered since)
            self.db.meter_ids.update((m.ldn, m.id) for m, _ in found.values())
        return found

    async def by_ip(self, ip: str) -> list[Meter]:
        return await self.db.run(meters_by_ip(ip))

    async def push_candidates(self, ip: str, limit: int) -> list[Meter]:
        return await self.db.run(push_candidates(ip, limit))

    async def known(self, limit: int) -> list[tuple[str, bytes, tuple[str, ...]]]:
        return await self.db.run(known_meters(limit))

    async def claim_polls(self, limit: int, lease: dt.timedelta) -> list[PollJob]:
        now = self.db.now()
        return await self.db.run(claim_polls(now, limit, now + lease))

    async def finish_poll(self, ldn: str, next_poll: dt.datetime, failures: int) -> None:
        await self.db.run(finish_poll(ldn, next_poll, failures))

    async def set_state(self, ldn: str, state: MeterState, by: Actor | None = None) -> None:
        now = self.db.now()
        change = set_meter_state(ldn, state, now)
        await self.db.change(audited(change, by, f"set meter {state.value}", ldn, now), [ldn])

    async def page(
        self,
        after: str | None = None,
        limit: int = 50,
        state: MeterState | None = None,
        search: str | None = None,
        *,
        query: MeterQuery | None = None,
    ) -> MeterPage:
        if query is None:
            return await self.db.run(meterlist.list_meters(after, limit, MeterQuery(search, state)))
        return await self.db.run(meterlist.list_meters(after, limit, query, total=True))

    async def count(
        self, state: MeterState | None = None, *, query: MeterQuery | None = None
    ) -> int:
        return await self.db.run(meterlist.count_meters(query or MeterQuery(state=state)))

    async def heard_since(self, since: dt.datetime) -> int:
        return await self.db.run(meterlist.connections_since(since))

    async def profiles(self, ldns: Collection[str]) -> dict[str, str]:
        return await self.db.run(profiles_of(sorted(set(ldns))))

    async def update(self, ldn: str, changes: Mapping[str, Any], by: Actor | None = None) -> Meter:
        now = self.db.now()
        detail = ", ".join(sorted(changes))
        change = prov.update_meter(ldn, changes, now)
        return await self.db.change(audited(change, by, "update meter", ldn, now, detail), [ldn])

    async def delete(self, ldn: str, by: Actor | None = None, purge: bool = False) -> None:
        now = self.db.now()
        change = prov.delete_meter(ldn, purge)
        detail = "with its history" if purge else None
        await self.db.change(audited(change, by, "delete meter", ldn, now, detail), [ldn])

    async def add_many(
        self,
        meters: Sequence[tuple[NewMeter, KeysSpec]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        now = self.db.now()
        keyed = any(keys for _, keys in meters) and not check_only
        change = prov.add_meters(meters, now, self.db.master_key() if keyed else None, check_only)
        audited_change = audited(change, by, "add meters", None, now, f"{len(meters)} meters")
        ldns = None if check_only else [m.ldn for m, _ in meters]
        return await self._trial(audited_change, ldns, checked=[])

    async def update_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        by: Actor | None = None,
        *,
        check_only: bool = False,
    ) -> list[Meter]:
        now = self.db.now()
        master = self.db.master_key() if any(c.get("keys") for _, c in items) else None
        change = prov.update_meters(items, now, master, check_only)
        audited_change = audited(change, by, "update meters", None, now, f"{len(items)} meters")
        ldns = None if check_only else [ldn for ldn, _ in items]
        return await self._trial(audited_change, ldns, checked=[])

    async def delete_many(
        self,
        ldns: Sequence[str],
        by: Actor | None = None,
        purge: bool = False,
        *,
        check_only: bool = False,
    ) -> None:
        now = self.db.now()
        change = prov.delete_meters(ldns, purge, check_only)
        detail = f"{len(ldns)} meters" + (" with their history" if purge else "")
        audited_change = audited(change, by, "delete meters", None, now, detail)
        await self._trial(audited_change, None if check_only else ldns, checked=None)

    async def _trial(
        self, transaction: Transaction[T], ldns: Collection[str] | None, *, checked: T
    ) -> T:
        """Run a bulk change of the meters ``ldns`` (None: only checked); one that was only
        checked (CheckedOnly, rolled back) gives ``checked``."""
        try:
            if ldns is None:
                return await self.db.run(transaction)
            return await self.db.change(transaction, ldns)
        except prov.CheckedOnly:
            return checked
