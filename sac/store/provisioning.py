"""Provisioning: meters added in bulk (all or none), changed, deleted.  Transactions as
generators (:mod:`sac.store.sql`); :class:`sac.store.meters.MetersComponent` runs them.

A bulk add checks every meter before it writes any and reports each problem by the
meter's position in the list, so a provisioning system fixes its whole file in one go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sac.errors import (
    BulkError,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    StorageError,
    UnknownMeter,
)
from sac.keys import MasterKey, key_place
from sac.store.keys import check_keys, write_keys
from sac.store.model import METER_FIELDS, Meter, MeterState, NewMeter
from sac.store.rows import METER_COLUMNS, meter_row
from sac.store.sql import Exec, InsertRows, Query, Transaction, id_of

__all__ = ["CheckedOnly", "MeterKeysSpec"]

_NEW_METER_COLUMNS = (
    ("ldn", "text"),
    ("pdr", "text"),
    ("system_title", "bytes"),
    ("profile", "text"),
    ("address", "text"),
    ("allowed_ips", "text"),
    ("created", "time"),
    ("updated", "time"),
    ("poll_interval", "int"),
)
_KEY_COLUMNS = (
    ("meter_id", "int"),
    ("client_sap", "int"),
    ("role", "text"),
    ("wrapped", "bytes"),
    ("updated", "time"),
)

MeterKeysSpec = Mapping[int, tuple[bytes, bytes | None]]  # {client SAP: (EK, AK or None)}


class CheckedOnly(Exception):
    """Raised at the end of a bulk change asked ``check_only`` that found nothing wrong: the
    backend rolls back what the checks wrote, and the store answers "no problem"."""


def add_meters(
    meters: Sequence[tuple[NewMeter, MeterKeysSpec]],
    now: dt.datetime,
    master: MasterKey | None,
    check_only: bool = False,
) -> Transaction[list[Meter]]:
    """Every meter with its keys, or none: BulkError names each one refused (an LDN or a
    system title already held, or twice in the list; bad keys).  ``check_only``: refuse
    the same way, but add nothing (CheckedOnly when all would be added)."""
    if master is None and not check_only and any(keys for _, keys in meters):
        raise ConfigurationError("meter keys need a master key (SAC_MASTER_KEY)")
    errors, seen_ldn, seen_title = _check_list(meters)
    yield from _check_held(seen_ldn, seen_title, errors)
    if errors:
        raise BulkError(errors)
    if check_only:
        raise CheckedOnly()
    # set-based: one statement for the meters, one for their keys, whatever the count
    rows = [_new_row(m, now) for m, _ in meters]
    inserted = yield InsertRows("meters", _NEW_METER_COLUMNS, rows, returning=METER_COLUMNS)
    added = {meter.ldn: meter for meter in map(meter_row, inserted)}
    missing = [m.ldn for m, _ in meters if m.ldn not in added]
    if missing:  # added by another transaction since the checks
        raise Conflict(f"a meter with LDN {missing[0]} is already present")
    key_rows = _key_rows(meters, added, master, now) if master is not None else []
    if key_rows:
        yield InsertRows("meter_keys", _KEY_COLUMNS, key_rows)
    return [added[m.ldn] for m, _ in meters]


def _check_list(
    meters: Sequence[tuple[NewMeter, MeterKeysSpec]],
) -> tuple[dict[int, str], dict[str, int], dict[bytes, int]]:
    """The problems of a list of new meters on its own (bad keys, an LDN or a system title
    twice), by position; the position of each LDN and system title."""
    errors: dict[int, str] = {}
    seen_ldn: dict[str, int] = {}
    seen_title: dict[bytes, int] = {}
    for i, (meter, keys) in enumerate(meters):
        try:
            for ek, ak in keys.values():
                check_keys(ek, ak)
        except ValueError as exc:
            errors[i] = str(exc)
        if meter.ldn in seen_ldn:
            errors[i] = f"LDN {meter.ldn} is also item #{seen_ldn[meter.ldn]}"
        seen_ldn.setdefault(meter.ldn, i)
        if meter.system_title is not None:
            if meter.system_title in seen_title:
                errors[i] = f"the system title is also item #{seen_title[meter.system_title]}"
            seen_title.setdefault(meter.system_title, i)
    return errors, seen_ldn, seen_title


def _check_held(
    seen_ldn: dict[str, int], seen_title: dict[bytes, int], errors: dict[int, str]
) -> Transaction[None]:
    """Add to ``errors`` the new meters whose LDN or system title a meter has already."""
    ldns = list(seen_ldn)
    for start in range(0, len(ldns), 500):
        part = ldns[start : start + 500]
        rows = yield Query(
            f"SELECT ldn FROM meters WHERE ldn IN ({', '.join('?' * len(part))})", part
        )
        for (ldn,) in rows:
            errors.setdefault(seen_ldn[ldn], f"a meter with LDN {ldn} is already present")
    titles = list(seen_title)
    for start in range(0, len(titles), 500):
        some = titles[start : start + 500]
        rows = yield Query(
            "SELECT ldn, system_title FROM meters"
            f" WHERE system_title IN ({', '.join('?' * len(some))})",
            some,
        )
        for ldn, title in rows:
            errors.setdefault(
                seen_title[bytes(title)], f"meter {ldn} already has this system title"
            )


def _new_row(m: NewMeter, now: dt.datetime) -> tuple[Any, ...]:
    """The row of :data:`_NEW_METER_COLUMNS` of a new meter."""
    allowed = ",".join(m.allowed_ips)
    return (m.ldn, m.pdr, m.system_title, m.profile, m.address, allowed, now, now, m.poll_interval)


def _key_rows(
    meters: Sequence[tuple[NewMeter, MeterKeysSpec]],
    added: Mapping[str, Meter],
    master: MasterKey,
    now: dt.datetime,
) -> list[tuple[Any, ...]]:
    """The rows of :data:`_KEY_COLUMNS` of the new meters' keys, wrapped under ``master``."""
    return [
        (added[m.ldn].id, sap, role, master.wrap(key, key_place(m.ldn, sap, role)), now)
        for m, keys in meters
        for sap, (ek, ak) in sorted(keys.items())
        for role, key in (("ek", ek), ("ak", ak if ak is not None else ek))
    ]


def update_meter(ldn: str, changes: Mapping[str, Any], now: dt.datetime) -> Transaction[Meter]:
    """Change some of a meter's :data:`METER_FIELDS` and its ``state``; the meter as it is
    now.  Conflict when the new system title is another meter's."""
    unknown = set(changes) - {*METER_FIELDS, "state"}
    if unknown:
        raise InvalidRequest(f"no meter field {', '.join(sorted(unknown))}")
    current = yield Query(f"SELECT {METER_COLUMNS} FROM meters WHERE ldn = ?", (ldn,))
    if not current:
        raise UnknownMeter(ldn)
    meter = meter_row(current[0])
    # the same rules as a new meter's: build one with the changes applied
    merged = {f: getattr(meter, f) for f in METER_FIELDS}
    merged.update({k: v for k, v in changes.items() if k != "state"})
    # (the LDN does not change: a meter added before today's LDN rule keeps its own)
    checked: dict[str, Any] = {k: tuple(v) if k == "allowed_ips" else v for k, v in merged.items()}
    NewMeter("0" * 16, **checked)
    title = changes.get("system_title")
    if title is not None and title != meter.system_title:
        taken = yield Query("SELECT ldn FROM meters WHERE system_title = ?", (title,))
        if taken:
            raise Conflict(f"meter {taken[0][0]} already has this system title")
    sets: list[str] = ["updated = ?"]
    params: list[Any] = [now]
    for field, value in changes.items():
        if field == "allowed_ips":
            value = ",".join(value)
        elif field == "state":
            value = MeterState(value).value
        sets.append(f"{field} = ?")
        params.append(value)
    if "address" in changes or "poll_interval" in changes:
        sets.append("next_poll = NULL")  # a new address or interval: poll it soon
    rows = yield Query(
        f"UPDATE meters SET {', '.join(sets)} WHERE ldn = ? RETURNING {METER_COLUMNS}",
        [*params, ldn],
    )
    return meter_row(rows[0])


def update_meters(
    items: Sequence[tuple[str, Mapping[str, Any]]],
    now: dt.datetime,
    master: MasterKey | None,
    check_only: bool = False,
) -> Transaction[list[Meter]]:
    """Each (LDN, changes) of :func:`update_meter`, where ``changes`` may also hold
    ``keys`` ({client SAP: (EK, AK or None)}), or none: BulkError names each item refused.
    The meters as they are now, in the list's order."""
    errors: dict[int, str] = {}
    done = []
    seen: dict[str, int] = {}
    for i, (ldn, changes) in enumerate(items):
        if ldn in seen:
            errors[i] = f"meter {ldn} is also item #{seen[ldn]}"
            continue
        seen[ldn] = i
        fields = {k: v for k, v in changes.items() if k != "keys"}
        keys: MeterKeysSpec = changes.get("keys") or {}
        try:
            for ek, ak in keys.values():
                check_keys(ek, ak)
            if keys and master is None:
                raise ConfigurationError("meter keys need a master key (SAC_MASTER_KEY)")
            meter = yield from update_meter(ldn, fields, now)
            for sap, (ek, ak) in sorted(keys.items()):
                assert master is not None  # (keys without one are refused above)
                yield from write_keys(master, meter.id, ldn, sap, ek, ak, now)
            done.append(meter)
        except (ValueError, StorageError) as exc:
            errors[i] = str(exc)
    if errors:
        raise BulkError(errors)  # the backend rolls back the items already changed
    if check_only:
        raise CheckedOnly()  # the same: nothing changes
    return done


def delete_meters(ldns: Sequence[str], purge: bool, check_only: bool = False) -> Transaction[None]:
    """Each meter of :func:`delete_meter`, or none: BulkError names each refused;
    ``check_only``: the deletes are rolled back (CheckedOnly) even when all succeed."""
    errors: dict[int, str] = {}
    for i, ldn in enumerate(ldns):
        try:
            yield from delete_meter(ldn, purge)
        except StorageError as exc:
            errors[i] = str(exc)
    if errors:
        raise BulkError(errors)
    if check_only:
        raise CheckedOnly()


def delete_meter(ldn: str, purge: bool) -> Transaction[None]:
    """Remove a meter with its keys and counters.  One with readings or events is kept
    (Conflict) unless ``purge``: then its whole history goes too."""
    meter_id = yield from id_of(ldn)
    if not purge:
        held = yield Query(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM readings WHERE meter_id = ? LIMIT 1) r)"
            " + (SELECT count(*) FROM (SELECT 1 FROM events WHERE meter_id = ? LIMIT 1) e)",
            (meter_id, meter_id),
        )
        if held[0][0]:
            raise Conflict(f"meter {ldn} has readings or events: delete it with purge to lose them")
    for table in ("readings", "events", "commands", "meter_keys", "invocation_counters"):
        yield Exec(f"DELETE FROM {table} WHERE meter_id = ?", (meter_id,))
    yield Exec("DELETE FROM meters WHERE id = ?", (meter_id,))
