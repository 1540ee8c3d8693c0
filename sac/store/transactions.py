"""The store's logic, once for every backend: transactions as generators.

A transaction is a generator that yields :class:`Query` (rows come back) and :class:`Exec`
(the row count comes back) and returns its result.  SQL is written with ``?`` placeholders in
the dialect SQLite and PostgreSQL share (``ON CONFLICT ... DO UPDATE``, ``RETURNING``); each
backend runs the generator inside one database transaction -- SQLite in its thread,
PostgreSQL with awaits -- so the logic is sans-IO, like the codec.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sac.dlms import Obis
from sac.errors import ConfigurationError, ReplayError, StorageError
from sac.keys import MasterKey, key_place, wrapped_by
from sac.store.keycsv import KeyRow, RowError
from sac.store.model import (
    METER_SORTS,
    Event,
    Ingest,
    IngestResult,
    InvocationCounters,
    Meter,
    MeterKeys,
    MeterPage,
    MeterQuery,
    MeterState,
    MeterStatus,
    NewMeter,
    PeerCounter,
    PollJob,
    Reading,
    ReadingBuckets,
)

__all__ = [
    "Exec",
    "Query",
    "Transaction",
    "UnknownMeter",
]


@dataclass(frozen=True, slots=True)
class Query:
    """A statement whose rows come back.  ``lock``: lock the rows selected against other
    transactions, skipping those already locked (PostgreSQL's ``FOR UPDATE SKIP LOCKED``;
    SQLite's writers are serialised by ``BEGIN IMMEDIATE`` already)."""

    sql: str
    params: Sequence[Any] = ()
    lock: bool = False


@dataclass(frozen=True, slots=True)
class Exec:
    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class InsertRows:
    """Insert many rows into ``table``, skipping those a unique index says are held already;
    the number inserted comes back.  ``columns`` pairs each name with its kind (``int``,
    ``num``, ``text``, ``time``, ``bytes``) so that each backend takes its fastest path:
    ``executemany`` in SQLite, one ``INSERT ... SELECT FROM unnest(arrays)`` in PostgreSQL."""

    table: str
    columns: tuple[tuple[str, str], ...]
    rows: Sequence[tuple[Any, ...]]
    conflict: str = "DO NOTHING"  # what follows ON CONFLICT
    returning: str | None = None  # with it, the rows RETURNING gives come back, not a count


@dataclass(frozen=True, slots=True)
class UpdateRows:
    """Update many rows of ``table`` at once, each from one row of values: ``sets`` is the
    SET clause, where ``v.<column>`` is the row's value and ``<table>.<column>`` the row's
    current one (qualify both: the names overlap).  ``columns`` as for :class:`InsertRows`;
    the first is matched with ``<table>.<key>``.  PostgreSQL runs one ``UPDATE ... FROM
    unnest(arrays)``, SQLite one ``UPDATE ... FROM (SELECT ? AS ...)`` a row."""

    table: str
    key: str
    columns: tuple[tuple[str, str], ...]
    rows: Sequence[tuple[Any, ...]]
    sets: str


Transaction = Generator[Query | Exec | InsertRows | UpdateRows, Any, Any]


class UnknownMeter(StorageError):
    def __init__(self, ldn: str) -> None:
        super().__init__(f"no meter {ldn!r}")
        self.ldn = ldn


class Conflict(StorageError):
    """A write that breaks a uniqueness rule (an LDN or system title already present)."""


# rows (or LDNs) per statement: 10 parameters a reading, well under SQLite's 32766 and
# PostgreSQL's 65535
_BATCH_ROWS = 500

# --- rows to objects ----------------------------------------------------------------------

_METER_COLUMNS = (
    "id, ldn, pdr, system_title, profile, address, allowed_ips, state, created, updated,"
    " last_connection, index_value, index_scaler, index_unit, index_captured, diagnostic,"
    " battery_value, battery_unit, valve_state, status_at, poll_interval"
)


def when(value: Any) -> dt.datetime | None:
    """A timestamp as either backend returns it (ISO text from SQLite)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def _meter(row: Sequence[Any]) -> Meter:
    title = row[3]
    return Meter(
        id=row[0],
        ldn=row[1],
        pdr=row[2],
        system_title=bytes(title) if title is not None else None,
        profile=row[4],
        address=row[5],
        allowed_ips=tuple(ip for ip in row[6].split(",") if ip),
        state=MeterState(row[7]),
        created=when(row[8]),  # type: ignore[arg-type]
        updated=when(row[9]),  # type: ignore[arg-type]
        last_connection=when(row[10]),
        index_value=_number(row[11]),
        index_scaler=row[12],
        index_unit=row[13],
        index_captured=when(row[14]),
        diagnostic=row[15],
        battery_value=row[16],
        battery_unit=row[17],
        valve_state=row[18],
        status_at=when(row[19]),
        poll_interval=row[20],
    )


def _meter_ids(ldns: set[str]) -> Transaction:
    """{LDN: id} of the meters present among ``ldns``, a few hundred a query."""
    wanted = sorted(ldns)
    ids: dict[str, int] = {}
    for i in range(0, len(wanted), _BATCH_ROWS):
        part = wanted[i : i + _BATCH_ROWS]
        rows = yield Query(
            f"SELECT ldn, id FROM meters WHERE ldn IN ({', '.join('?' * len(part))})", part
        )
        ids.update(rows)
    return ids


def _meter_id(ldn: str) -> Transaction:
    rows = yield Query("SELECT id FROM meters WHERE ldn = ?", (ldn,))
    if not rows:
        raise UnknownMeter(ldn)
    return rows[0][0]


# --- the master key -----------------------------------------------------------------------


def check_master_key(master: MasterKey | None) -> Transaction:
    """Refuse a store that holds keys with no master key or another one; remember the id."""
    rows = yield Query("SELECT wrapped FROM meter_keys LIMIT 1")
    held = wrapped_by(bytes(rows[0][0])) if rows else None
    if held is not None:
        if master is None:
            raise ConfigurationError(
                f"the store holds meter keys wrapped under master key {held}: "
                "set SAC_MASTER_KEY (or [store] master_key_file in the configuration)"
            )
        if master.id_hex != held:
            raise ConfigurationError(
                f"the store's meter keys are wrapped under master key {held}, "
                f"the configured one is {master.id_hex}: wrong key, or rotate with the old one"
            )
    if master is not None:
        yield Exec(
            "INSERT INTO store_meta (name, value) VALUES ('master_key_id', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (master.id_hex,),
        )


def rotate_master_key(old: MasterKey, new: MasterKey) -> Transaction:
    """Re-wrap every key under ``new`` in one transaction; the number of keys."""
    rows = yield Query(
        "SELECT k.meter_id, k.client_sap, k.role, k.wrapped, m.ldn"
        " FROM meter_keys k JOIN meters m ON m.id = k.meter_id"
    )
    for meter_id, sap, role, blob, ldn in rows:
        place = key_place(ldn, sap, role)
        blob = new.wrap(old.unwrap(bytes(blob), place), place)
        yield Exec(
            "UPDATE meter_keys SET wrapped = ? WHERE meter_id = ? AND client_sap = ? AND role = ?",
            (blob, meter_id, sap, role),
        )
    yield Exec("UPDATE store_meta SET value = ? WHERE name = 'master_key_id'", (new.id_hex,))
    return len(rows)


# --- meters -------------------------------------------------------------------------------


def add_meter(
    meter: NewMeter,
    now: dt.datetime,
    master: MasterKey | None = None,
    keys: Mapping[int, tuple[bytes, bytes | None]] = {},
) -> Transaction:
    """A new meter, with its keys ({client SAP: (EK, AK or None: the EK)}) wrapped under
    ``master``: the row and the keys together or neither."""
    for ek, ak in keys.values():
        _check_keys(ek, ak)
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
        f" updated, poll_interval) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_METER_COLUMNS}",
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
    added = _meter(rows[0])
    if master is not None:
        for sap, (ek, ak) in sorted(keys.items()):
            yield from _write_keys(master, added.id, meter.ldn, sap, ek, ak, now, held={})
    return added


def claim_polls(now: dt.datetime, limit: int, lease_until: dt.datetime) -> Transaction:
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


def finish_poll(ldn: str, next_poll: dt.datetime, failures: int) -> Transaction:
    """A poll ended: the next one is due at ``next_poll``; ``failures`` in a row so far."""
    yield Exec(
        "UPDATE meters SET next_poll = ?, poll_failures = ? WHERE ldn = ?",
        (next_poll, failures, ldn),
    )


def get_meter(ldn: str) -> Transaction:
    rows = yield Query(f"SELECT {_METER_COLUMNS} FROM meters WHERE ldn = ?", (ldn,))
    return _meter(rows[0]) if rows else None


def meter_by_system_title(title: bytes) -> Transaction:
    rows = yield Query(f"SELECT {_METER_COLUMNS} FROM meters WHERE system_title = ?", (title,))
    return _meter(rows[0]) if rows else None


def meters_by_ip(ip: str) -> Transaction:
    """The meters whose allowlist holds the address ``ip`` (how a push with an empty system
    title is identified)."""
    if not ip or "," in ip or "%" in ip or "_" in ip:
        return []
    rows = yield Query(
        f"SELECT {_METER_COLUMNS} FROM meters WHERE ',' || allowed_ips || ',' LIKE ?",
        (f"%,{ip},%",),
    )
    return [_meter(row) for row in rows]


def push_candidates(ip: str, limit: int) -> Transaction:
    """The meters (with a system title) a push without one from ``ip`` may come from, at
    most ``limit``: those whose allowlist holds ``ip``, then those with no allowlist that
    were last heard from ``ip``, the latest first."""
    if not ip or "," in ip or "%" in ip or "_" in ip or limit < 1:
        return []
    rows = yield Query(
        f"SELECT {_METER_COLUMNS} FROM meters WHERE system_title IS NOT NULL"
        " AND (',' || allowed_ips || ',' LIKE ? OR (allowed_ips = '' AND last_address = ?))"
        " ORDER BY CASE WHEN allowed_ips = '' THEN 1 ELSE 0 END,"
        " last_connection IS NULL, last_connection DESC, ldn LIMIT ?",
        (f"%,{ip},%", ip, limit),
    )
    return [_meter(row) for row in rows]


def known_meters(limit: int) -> Transaction:
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


def set_meter_state(ldn: str, state: MeterState, now: dt.datetime) -> Transaction:
    count = yield Exec(
        "UPDATE meters SET state = ?, updated = ? WHERE ldn = ?", (state.value, now, ldn)
    )
    if not count:
        raise UnknownMeter(ldn)


# --- keys ---------------------------------------------------------------------------------


def _check_keys(ek: bytes, ak: bytes | None) -> None:
    for name, key in (("EK", ek), ("AK", ak)):
        if key is not None and len(key) != 16:
            raise ValueError(f"the {name} must be 16 bytes")


def set_keys(
    master: MasterKey, ldn: str, client_sap: int, ek: bytes, ak: bytes | None, now: dt.datetime
) -> Transaction:
    _check_keys(ek, ak)
    meter_id = yield from _meter_id(ldn)
    yield from _write_keys(master, meter_id, ldn, client_sap, ek, ak, now)


def _write_keys(
    master: MasterKey,
    meter_id: int,
    ldn: str,
    client_sap: int,
    ek: bytes,
    ak: bytes | None,
    now: dt.datetime,
    held: dict[str, bytes] | None = None,
) -> Transaction:
    """Write a meter's keys for a client; ``held``: the wrapped keys it has now by role (None:
    look them up).  New keys start a new invocation-counter space (the GCM IV is the system
    title and the counter, per key), so the client's counters restart from 0; the same keys
    written again keep them (restarting them under an unchanged key would send a counter
    twice).  True when the keys changed."""
    new = {"ek": ek, "ak": ak if ak is not None else ek}
    if held is None:
        rows = yield Query(
            "SELECT role, wrapped FROM meter_keys WHERE meter_id = ? AND client_sap = ?",
            (meter_id, client_sap),
        )
        held = {role: bytes(blob) for role, blob in rows}
    if held and held.keys() == new.keys():
        old = {
            role: master.unwrap(blob, key_place(ldn, client_sap, role))
            for role, blob in held.items()
        }
        if old == new:
            return False
    for role, key in new.items():
        yield Exec(
            "INSERT INTO meter_keys (meter_id, client_sap, role, wrapped, updated)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id, client_sap, role)"
            " DO UPDATE SET wrapped = excluded.wrapped, updated = excluded.updated",
            (meter_id, client_sap, role, master.wrap(key, key_place(ldn, client_sap, role)), now),
        )
    if held:
        yield Exec(
            "DELETE FROM invocation_counters WHERE meter_id = ? AND client_sap = ?",
            (meter_id, client_sap),
        )
    return True


def _held_keys(meter_ids: Sequence[int]) -> Transaction:
    """{(meter id, client): {role: wrapped key}} of ``meter_ids``, a few hundred a query."""
    wanted = sorted(set(meter_ids))
    held: dict[tuple[int, int], dict[str, bytes]] = {}
    for i in range(0, len(wanted), _BATCH_ROWS):
        part = wanted[i : i + _BATCH_ROWS]
        rows = yield Query(
            "SELECT meter_id, client_sap, role, wrapped FROM meter_keys"
            f" WHERE meter_id IN ({', '.join('?' * len(part))})",
            part,
        )
        for meter_id, sap, role, blob in rows:
            held.setdefault((meter_id, sap), {})[role] = bytes(blob)
    return held


def get_keys(master: MasterKey, ldn: str, client_sap: int) -> Transaction:
    rows = yield Query(
        "SELECT k.role, k.wrapped FROM meter_keys k JOIN meters m ON m.id = k.meter_id"
        " WHERE m.ldn = ? AND k.client_sap = ?",
        (ldn, client_sap),
    )
    if not rows:
        return None
    keys = {
        role: master.unwrap(bytes(blob), key_place(ldn, client_sap, role)) for role, blob in rows
    }
    return MeterKeys(keys["ek"], keys.get("ak", keys["ek"]))


class KeyImportError(StorageError):
    """A key import refused as a whole; ``errors`` lists every bad line."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        shown = "; ".join(map(str, errors[:5])) + ("; ..." if len(errors) > 5 else "")
        super().__init__(f"{len(errors)} bad lines, nothing imported: {shown}")
        self.errors = tuple(errors)


def import_keys(
    master: MasterKey, rows: Sequence[KeyRow], replace: bool, now: dt.datetime
) -> Transaction:
    """Set the keys of ``rows`` (KeyRow), all or none; KeyImportError lists every bad line."""
    ids = yield from _meter_ids({r.ldn for r in rows})
    held = yield from _held_keys(list(ids.values()))
    errors = []
    for r in rows:
        if r.ldn not in ids:
            errors.append(RowError(r.line, f"no meter {r.ldn}"))
        elif not replace and (ids[r.ldn], r.client_sap) in held:
            errors.append(RowError(r.line, f"{r.ldn} client {r.client_sap} has keys already"))
    if errors:
        raise KeyImportError(errors)
    written: set[tuple[int, int]] = set()
    for r in rows:
        # the ids and the keys held were looked up in batches above; no query per row
        place = (ids[r.ldn], r.client_sap)
        before = held.pop(place, {}) if place not in written else None
        yield from _write_keys(master, place[0], r.ldn, r.client_sap, r.ek, r.ak, now, before)
        written.add(place)
    return len(rows)


# --- invocation counters ------------------------------------------------------------------


def reserve_invocation_counters(ldn: str, client_sap: int, count: int) -> Transaction:
    """Reserve the next ``count`` counters of ours: the first one.  Stored before it is used,
    in one statement, so a restart never sends a counter twice."""
    if count < 1:
        raise ValueError("reserve at least one counter")
    meter_id = yield from _meter_id(ldn)
    rows = yield Query(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap)"
        " DO UPDATE SET ours = invocation_counters.ours + excluded.ours RETURNING ours",
        (meter_id, client_sap, count),
    )
    last = rows[0][0]
    if last > 0xFFFFFFFF:
        raise StorageError(f"the invocation counters of {ldn} are exhausted: renew the key")
    return last - count + 1


def _check_counter(value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"an invocation counter is 0..2^32-1, not {value}")


def raise_invocation_counter(ldn: str, client_sap: int, used: int) -> Transaction:
    """Reserve above ``used``: our next counter is sent above it (reserved before it is sent,
    as every counter).  Callers bound ``used`` (see MeterSession): a counter an
    unauthenticated answer asked for is not proven by this."""
    _check_counter(used)
    meter_id = yield from _meter_id(ldn)
    yield Exec(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET ours = excluded.ours"
        " WHERE invocation_counters.ours < excluded.ours",
        (meter_id, client_sap, used),
    )


def prove_invocation_counter(ldn: str, client_sap: int, accepted: int) -> Transaction:
    """The meter has proven, by authenticated data, that it accepted our counter
    ``accepted``: the proven mark moves up to it (and the reservation with it)."""
    _check_counter(accepted)
    meter_id = yield from _meter_id(ldn)
    yield Exec(
        "INSERT INTO invocation_counters (meter_id, client_sap, ours, proven) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET"
        " ours = CASE WHEN invocation_counters.ours < excluded.ours"
        " THEN excluded.ours ELSE invocation_counters.ours END,"
        " proven = CASE WHEN invocation_counters.proven < excluded.proven"
        " THEN excluded.proven ELSE invocation_counters.proven END",
        (meter_id, client_sap, accepted, accepted),
    )


def reset_invocation_counters(ldn: str) -> Transaction:
    """Forget every counter of a meter (all its clients), after its keys were changed in
    the field; how many clients had counters."""
    meter_id = yield from _meter_id(ldn)
    return (yield Exec("DELETE FROM invocation_counters WHERE meter_id = ?", (meter_id,)))


def accept_peer_counter(ldn: str, client_sap: int, counter: int) -> Transaction:
    """Record the meter's counter if it is newer than the last one: True, else False
    (a replay).  The check and the write are one statement."""
    meter_id = yield from _meter_id(ldn)
    return (yield from _accept_counter(meter_id, client_sap, counter))


def _accept_counter(meter_id: int, client_sap: int, counter: int) -> Transaction:
    rows = yield Query(
        "INSERT INTO invocation_counters (meter_id, client_sap, theirs) VALUES (?, ?, ?)"
        " ON CONFLICT (meter_id, client_sap) DO UPDATE SET theirs = excluded.theirs"
        " WHERE invocation_counters.theirs IS NULL OR invocation_counters.theirs < excluded.theirs"
        " RETURNING theirs",
        (meter_id, client_sap, counter),
    )
    return bool(rows)


def invocation_counters(ldn: str, client_sap: int) -> Transaction:
    """(ours: the last reserved, theirs: the last accepted or None)."""
    state = yield from counter_state(ldn, client_sap)
    return state.ours, state.theirs


def counter_state(ldn: str, client_sap: int) -> Transaction:
    """A meter's InvocationCounters for a client (zeros before any)."""
    rows = yield Query(
        "SELECT c.ours, c.proven, c.theirs FROM invocation_counters c"
        " JOIN meters m ON m.id = c.meter_id WHERE m.ldn = ? AND c.client_sap = ?",
        (ldn, client_sap),
    )
    return InvocationCounters(*rows[0]) if rows else InvocationCounters()


# --- readings -----------------------------------------------------------------------------

_READING_COLUMNS = (
    ("meter_id", "int"),
    ("obis", "text"),
    ("attribute", "int"),
    ("value", "num"),
    ("raw", "bytes"),
    ("scaler", "int"),
    ("unit", "int"),
    ("captured", "time"),
    ("received", "time"),
    ("source", "text"),
)
_EVENT_COLUMNS = (
    ("meter_id", "int"),
    ("logbook", "text"),
    ("code", "int"),
    ("occurred", "time"),
    ("counter", "int"),
    ("received", "time"),
    ("source", "text"),
)


def ingest(batch: Ingest, ids: dict[str, int]) -> Transaction:
    """Store what sessions brought, all or none: readings (history), events, and the meters'
    list values and last connection.  A reading or event already held is not stored again.

    ``ids`` is the caller's {LDN: meter id} cache (an LDN never changes meter): only the
    LDNs missing from it are looked up, and it learns them."""
    ldns = {r.ldn for r in batch.readings} | {e.ldn for e in batch.events}
    ldns |= {s.ldn for s in batch.statuses} | {c.ldn for c in batch.counters}
    unknown = ldns - ids.keys()
    if unknown:
        found = yield from _meter_ids(unknown)
        missing = sorted(unknown - found.keys())
        if missing:
            raise UnknownMeter(missing[0])
        ids.update(found)
    yield from _accept_counters(batch.counters, ids)
    readings = yield InsertRows(
        "readings",
        _READING_COLUMNS,
        [
            (
                ids[r.ldn],
                str(r.obis),
                r.attribute,
                r.value,
                r.raw,
                r.scaler,
                r.unit,
                r.captured,
                r.received,
                r.source,
            )
            for r in batch.readings
        ],
    )
    events = yield InsertRows(
        "events",
        _EVENT_COLUMNS,
        [
            (ids[e.ldn], str(e.logbook), e.code, e.occurred, e.counter, e.received, e.source)
            for e in batch.events
        ],
    )
    yield from _update_statuses(batch.statuses, ids)
    pending: frozenset[str] = frozenset()
    if batch.counters:  # pushes: which of these meters have commands waiting?
        pushed = sorted({ids[c.ldn] for c in batch.counters})
        rows = yield Query(
            "SELECT DISTINCT m.ldn FROM commands c JOIN meters m ON m.id = c.meter_id"
            " WHERE c.state = 'pending' AND m.state = 'active'"  # (disabled meanwhile: none)
            f" AND c.meter_id IN ({', '.join('?' * len(pushed))})",
            pushed,
        )
        pending = frozenset(ldn for (ldn,) in rows)
    return IngestResult(readings, events, pending)


_COUNTER_COLUMNS = (("meter_id", "int"), ("client_sap", "int"), ("theirs", "int"))


def _accept_counters(counters: Sequence[PeerCounter], ids: dict[str, int]) -> Transaction:
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


# the list values of a meter: (column, kind) in the order _status_row gives them
_STATUS_COLUMNS = (
    ("id", "int"),
    ("connected", "time"),
    ("values_at", "time"),
    ("values_recv", "time"),
    ("diagnostic", "int"),
    ("battery_value", "int"),
    ("battery_unit", "int"),
    ("valve_state", "int"),
    ("index_at", "time"),
    ("index_recv", "time"),
    ("index_value", "num"),
    ("index_scaler", "int"),
    ("index_unit", "int"),
    ("address", "text"),
)


def _newer(stamp: str, new: str, targets: Sequence[str]) -> list[str]:
    """SET items: each target takes its new value (when it has one) if ``new`` is not older
    than the stored ``stamp``; else it stays as it is."""
    fresh = f"v.{new} IS NOT NULL AND (meters.{stamp} IS NULL OR meters.{stamp} <= v.{new})"
    return [
        f"{target} = CASE WHEN {fresh} AND v.{source} IS NOT NULL THEN v.{source}"
        f" ELSE meters.{target} END"
        for target, source in ((t.split(":")[0], t.split(":")[-1]) for t in targets)
    ]


_STATUS_SETS = ", ".join(
    [
        # the address goes with the connection it was heard on
        *_newer("last_connection", "connected", ["last_address:address"]),
        *_newer("last_connection", "connected", ["last_connection:connected"]),
        # newer by the SAC's receipt time; the meter's capture time goes along, to be shown
        *_newer(
            "values_received",
            "values_recv",
            [
                "diagnostic",
                "battery_value",
                "battery_unit",
                "valve_state",
                "status_at:values_at",
                "values_received:values_recv",
            ],
        ),
        *_newer(
            "index_received",
            "index_recv",
            [
                "index_value",
                "index_scaler",
                "index_unit",
                "index_captured:index_at",
                "index_received:index_recv",
            ],
        ),
    ]
)


def _status_row(meter_id: int, status: MeterStatus) -> tuple[Any, ...]:
    """The row of :data:`_STATUS_COLUMNS` for one meter status (None: leave as it is)."""
    values = (
        status.diagnostic,
        status.battery_value,
        status.battery_unit if status.battery_value is not None else None,
        status.valve_state,
    )
    at = received = None
    if any(v is not None for v in values):
        at = status.at or status.connected
        received = status.connected or status.at
        if at is None:
            raise ValueError("a meter status with values needs a time (at or connected)")
    index, index_row = status.index, (None, None, None, None, None)
    if index is not None:
        stamp = index.captured or status.at or status.connected
        if stamp is None or index.value is None:
            raise ValueError("the index of a meter status needs a value and a time")
        index_recv = status.connected or index.received or stamp
        index_row = (stamp, index_recv, index.value, index.scaler, index.unit)
    return (meter_id, status.connected, at, received, *values, *index_row, status.address)


def _update_statuses(statuses: Sequence[MeterStatus], ids: dict[str, int]) -> Transaction:
    """Move meters' list values forward, never back to an older value: one statement for
    all, when no meter appears twice (one a statement otherwise, in order)."""
    rows = [_status_row(ids[s.ldn], s) for s in statuses]
    unique = len({r[0] for r in rows}) == len(rows)
    for group in [sorted(rows)] if unique else [[r] for r in rows]:  # sorted: one lock order
        if group:
            yield UpdateRows("meters", "id", _STATUS_COLUMNS, group, _STATUS_SETS)


_READING_VALUES = "r.value, r.raw, r.scaler, r.unit, r.captured, r.received, r.source"


def _reading(ldn: str, obis: Obis, attribute: int, row: Sequence[Any]) -> Reading:
    """A row of :data:`_READING_VALUES` as a Reading."""
    value, raw, scaler, unit, captured, received, source = row
    return Reading(
        ldn,
        obis,
        attribute,
        _number(value),
        when(received),  # type: ignore[arg-type]
        source,
        when(captured),
        scaler,
        unit,
        bytes(raw) if raw is not None else None,
    )


def last_readings(ldn: str, obis: Obis, attribute: int, limit: int) -> Transaction:
    """The ``limit`` latest readings of one attribute of one meter, newest first."""
    rows = yield Query(
        f"SELECT {_READING_VALUES} FROM readings r JOIN meters m ON m.id = r.meter_id"
        " WHERE m.ldn = ? AND r.obis = ? AND r.attribute = ?"
        " ORDER BY r.captured DESC, r.id DESC LIMIT ?",
        (ldn, str(obis), attribute, limit),
    )
    return [_reading(ldn, obis, attribute, row) for row in rows]


def readings_between(
    ldn: str,
    obis: Obis,
    attribute: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    limit: int,
) -> Transaction:
    """One attribute of one meter captured in [start, end) (a bound None: open), oldest
    first; the newest ``limit`` when there are more.  A reading without a capture time has
    no place on a time axis and is left out."""
    if limit < 1:
        raise ValueError("ask for at least one reading")
    meter_id = yield from _meter_id(ldn)
    where = ["r.meter_id = ?", "r.obis = ?", "r.attribute = ?", "r.captured IS NOT NULL"]
    params: list[Any] = [meter_id, str(obis), attribute]
    if start is not None:
        where.append("r.captured >= ?")
        params.append(start)
    if end is not None:
        where.append("r.captured < ?")
        params.append(end)
    rows = yield Query(
        f"SELECT {_READING_VALUES} FROM readings r WHERE {' AND '.join(where)}"
        " ORDER BY r.captured DESC LIMIT ?",
        [*params, limit],
    )
    return [_reading(ldn, obis, attribute, row) for row in reversed(rows)]


def reading_buckets(
    ldn: str,
    obis: Obis,
    attribute: int,
    start: dt.datetime,
    end: dt.datetime,
    width: int,
    zone: dt.tzinfo = dt.UTC,
) -> Transaction:
    """One attribute of one meter captured in [start, end), cut into buckets of ``width``
    seconds that start at midnight in ``zone`` (so a day's bucket is that zone's calendar
    day, on either side of a daylight-saving change): the last reading of each, found by
    the database, so a year of hourly readings costs a few hundred rows, not 8,760."""
    if width < 1:
        raise ValueError("a bucket lasts at least one second")
    if end <= start:
        raise ValueError("the range ends before it starts")
    meter_id = yield from _meter_id(ldn)
    # seconds to add to a UTC time to get the zone's wall-clock time, for each stretch of
    # the range with one offset (the CASE picks it per reading)
    shifts = utc_offsets(start, end, zone)
    whens = " ".join(f"WHEN captured < ? THEN {offset}" for _, offset in shifts[:-1])
    case = f"CASE {whens} ELSE {shifts[-1][1]} END" if whens else str(shifts[0][1])
    where = (
        "meter_id = ? AND obis = ? AND attribute = ? AND captured >= ? AND captured < ?",
        [meter_id, str(obis), attribute, start, end],
    )
    # the window sorts narrow rows (ids), then the few chosen are read whole
    rows = yield Query(
        f"SELECT {_READING_VALUES} FROM readings r WHERE r.id IN (SELECT id FROM ("
        f"SELECT id, row_number() OVER (PARTITION BY (unixepoch(captured) + {case})"
        f" / {int(width)} ORDER BY captured DESC, id DESC) AS k"
        f" FROM readings WHERE {where[0]}) b WHERE b.k = 1) ORDER BY r.captured",
        [*(since for since, _ in shifts[1:]), *where[1]],
    )
    total = yield Query(f"SELECT count(*) FROM readings WHERE {where[0]}", where[1])
    return ReadingBuckets(tuple(_reading(ldn, obis, attribute, row) for row in rows), total[0][0])


def utc_offsets(
    start: dt.datetime, end: dt.datetime, zone: dt.tzinfo
) -> list[tuple[dt.datetime, int]]:
    """The stretches of [start, end) with one UTC offset in ``zone``: (from when, offset in
    seconds), the first from ``start``.  Days are stepped, then a change found to the minute."""

    def offset(at: dt.datetime) -> int:
        return int(at.astimezone(zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    out = [(start, offset(start))]
    day = dt.timedelta(days=1)
    at = start
    while at < end:
        following = min(at + day, end)
        if offset(following) != out[-1][1]:
            lo, hi = at, following  # offset(lo) is the old one, offset(hi) the new
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if offset(mid) == out[-1][1] else (lo, mid)
            out.append((hi.replace(second=0, microsecond=0), offset(hi)))
        at = following
    return out


def count_readings() -> Transaction:
    rows = yield Query("SELECT count(*) FROM readings")
    return rows[0][0]


def _number(value: Any) -> int | float | None:
    """A stored number the same on every backend: an int when whole, else a float
    (SQLite may give a float for a whole number, PostgreSQL a Decimal for anything)."""
    if value is None or isinstance(value, int):
        return value
    if value == int(value):
        return int(value)
    return float(value)


# --- the meter list -----------------------------------------------------------------------

# LDNs and PDRs are printable ASCII: a prefix p matches [p, p + DEL)
_AFTER_ASCII = "\x7f"


def _meter_filters(query: MeterQuery, nulls: bool | None = None) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of a query's filters, and their parameters.  ``nulls``: the rows
    are only those whose sort column is NULL (True) or only those where it is not (False);
    a filter on that column is then simpler, one range of its index rather than an OR."""
    where: list[str] = []
    params: list[Any] = []
    if query.state is not None:
        where.append("state = ?")
        params.append(query.state.value)
    if query.search:
        where.append("((ldn >= ? AND ldn < ?) OR (pdr >= ? AND pdr < ?))")
        params += [query.search, query.search + _AFTER_ASCII] * 2
    if query.valve is not None:
        where.append("valve_state = ?")
        params.append(query.valve)
    if query.alarms:
        where.append("diagnostic IS NOT NULL AND diagnostic <> 0")
    if query.unseen_since is not None:
        if query.sort != "last_connection" or nulls is None:
            where.append("(last_connection IS NULL OR last_connection < ?)")
            params.append(query.unseen_since)
        elif not nulls:  # (a meter never heard is unseen)
            where.append("last_connection < ?")
            params.append(query.unseen_since)
    if query.changed_since is not None:
        where.append("(updated >= ? OR status_at >= ?)")
        params += [query.changed_since] * 2
    return where, params


def _keeps_nulls(query: MeterQuery) -> bool:
    """Whether a meter with no value in the sort column may pass the query's filters."""
    return not (query.sort == "valve" and query.valve is not None) and not (
        query.sort == "diagnostic" and query.alarms
    )


def _cursor(query: MeterQuery, meter: Meter) -> str:
    """Where the next page starts: after ``meter``.  The LDN itself in LDN order (what
    callers before sorted lists knew), else [sort, the meter's value, LDN] in JSON."""
    if query.sort == "ldn":
        return meter.ldn
    value = getattr(meter, METER_SORTS[query.sort])  # Meter's fields are named as the columns
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    return json.dumps([query.sort, value, meter.ldn], separators=(",", ":"))


# the JSON types of each sort's values in a cursor (a time is ISO 8601 text)
_CURSOR_TYPES = {
    "pdr": (str,),
    "index": (int, float),
    "diagnostic": (int,),
    "battery": (int,),
    "last_connection": (str,),
    "valve": (int,),
}


def _after(query: MeterQuery, cursor: str) -> tuple[Any, str]:
    """(sort value or None, LDN) of a cursor of ``query``'s sort; ValueError for any other
    text (a cursor of another sort, a damaged link)."""
    try:
        sort, value, ldn = json.loads(cursor)
        if sort != query.sort or not isinstance(ldn, str):
            raise ValueError(sort)
        if value is not None:
            if type(value) not in _CURSOR_TYPES[sort]:  # type(): a bool is no number here
                raise ValueError(value)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError(value)  # no column holds it (SQLite would overflow)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(value)
            if sort == "last_connection":
                value = dt.datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError(value)
    except (ValueError, TypeError):
        raise ValueError(f"not a cursor of the meter list sorted by {query.sort}") from None
    return value, ldn


def list_meters(
    after: str | None, limit: int, query: MeterQuery, total: bool = False
) -> Transaction:
    """One page of the meters ``query`` matches, in its order, after the cursor ``after``:
    one indexed query, keyset-paginated (``total``: count them too).

    In an order other than the LDN's, the meters with a value come first, in the order of
    (value, LDN), then those without (NULL), in LDN order, reversed with ``descending``
    except that NULLs stay last.  Each part is one range of the (column, ldn) index, and the
    page takes from both at once (UNION ALL) when it may straddle them."""
    if not 1 <= limit <= 1000:
        raise ValueError("a page holds 1 to 1000 meters")
    column = METER_SORTS[query.sort]
    desc, past = (" DESC", "<") if query.descending else ("", ">")
    order = f"{column}{desc}, ldn{desc}" if column != "ldn" else f"ldn{desc}"
    # the parts of the order the page may take from: (the sort column is NULL in it: True,
    # never: False, either: None; its conditions; their parameters)
    parts: list[tuple[bool | None, list[str], list[Any]]] = []
    if column == "ldn":
        parts.append((None, [f"ldn {past} ?"], [after]) if after is not None else (None, [], []))
    else:
        value, ldn = _after(query, after) if after is not None else (None, None)
        among_nulls = after is not None and value is None
        if among_nulls and not _keeps_nulls(query):
            raise ValueError(f"not a cursor of this meter list: it keeps no {column} NULL")
        if after is None:
            parts.append((False, [f"{column} IS NOT NULL"], []))
        elif not among_nulls:
            parts.append((False, [f"({column}, ldn) {past} (?, ?)"], [value, ldn]))
        if among_nulls:
            parts.append((True, [f"{column} IS NULL", f"ldn {past} ?"], [ldn]))
        elif _keeps_nulls(query):
            parts.append((True, [f"{column} IS NULL"], []))
    selects, values = [], []
    for i, (nulls, where, extra) in enumerate(parts):
        filters, params = _meter_filters(query, nulls)
        clause = " AND ".join([*filters, *where])
        selects.append(
            f"SELECT {i} AS part, {_METER_COLUMNS} FROM meters"
            f"{f' WHERE {clause}' if clause else ''} ORDER BY {order} LIMIT ?"
        )
        values += [*params, *extra, limit + 1]
    if len(selects) == 1:
        sql = selects[0]
    else:  # the first part's rows, then the second's
        union = " UNION ALL ".join(f"SELECT * FROM ({s}) AS p{i}" for i, s in enumerate(selects))
        sql = f"SELECT * FROM ({union}) AS page ORDER BY part, {order} LIMIT ?"
        values.append(limit + 1)
    rows = yield Query(sql, values)
    meters = tuple(_meter(row[1:]) for row in rows[:limit])
    next_after = _cursor(query, meters[-1]) if len(rows) > limit else None
    count = (yield from count_meters(query)) if total else None
    return MeterPage(meters, next_after, count)


def count_meters(query: MeterQuery) -> Transaction:
    """How many meters ``query``'s filters keep."""
    where, params = _meter_filters(query)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = yield Query(f"SELECT count(*) FROM meters{clause}", params)
    return rows[0][0]


def connections_since(since: dt.datetime) -> Transaction:
    """How many meters were heard at ``since`` or later."""
    rows = yield Query("SELECT count(*) FROM meters WHERE last_connection >= ?", (since,))
    return rows[0][0]


# --- events -------------------------------------------------------------------------------


def events(ldn: str, limit: int) -> Transaction:
    """A meter's latest events, newest first."""
    rows = yield Query(
        "SELECT e.logbook, e.code, e.occurred, e.received, e.source, e.counter"
        " FROM events e JOIN meters m ON m.id = e.meter_id WHERE m.ldn = ?"
        " ORDER BY e.occurred DESC, e.id DESC LIMIT ?",
        (ldn, limit),
    )
    return [
        Event(ldn, Obis(logbook), code, when(occurred), when(received), source, counter)  # type: ignore[arg-type]
        for logbook, code, occurred, received, source, counter in rows
    ]
