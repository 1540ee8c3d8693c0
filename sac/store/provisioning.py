"""Provisioning and machine clients: meters added in bulk (all or none), changed, deleted;
API tokens.  Transactions as generators, like :mod:`sac.store.transactions`.

A bulk add checks every meter before it writes any and reports each problem by the
meter's position in the list, so a provisioning system fixes its whole file in one go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sac.errors import ConfigurationError, StorageError
from sac.keys import MasterKey, key_place
from sac.store.model import METER_FIELDS, ApiToken, MeterState, NewMeter, User
from sac.store.operations import _USER_COLUMNS, UnknownUser, _user, token_hash
from sac.store.transactions import (
    _METER_COLUMNS,
    Conflict,
    Exec,
    InsertRows,
    Query,
    Transaction,
    UnknownMeter,
    _check_keys,
    _meter,
    _meter_id,
    _write_keys,
    when,
)

__all__ = ["BulkError", "CheckedOnly", "MeterKeysSpec"]

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

# a token used again within this long is not written again (no write per API call)
_LAST_USED_STEP = dt.timedelta(minutes=1)


class CheckedOnly(Exception):
    """Raised at the end of a bulk change asked ``check_only`` that found nothing wrong: the
    backend rolls back what the checks wrote, and the store answers "no problem"."""


class BulkError(StorageError):
    """A bulk change refused as a whole: ``errors`` {position in the list: reason}."""

    def __init__(self, errors: Mapping[int, str]) -> None:
        self.errors = dict(sorted(errors.items()))
        first = ", ".join(f"#{i}: {why}" for i, why in list(self.errors.items())[:3])
        more = f" and {len(self.errors) - 3} more" if len(self.errors) > 3 else ""
        super().__init__(f"{len(self.errors)} of the items are refused ({first}{more})")


def add_meters(
    meters: Sequence[tuple[NewMeter, MeterKeysSpec]],
    now: dt.datetime,
    master: MasterKey | None,
    check_only: bool = False,
) -> Transaction:
    """Every meter with its keys, or none: BulkError names each one refused (an LDN or a
    system title already held, or twice in the list; bad keys).  ``check_only``: refuse
    the same way, but add nothing (CheckedOnly when all would be added)."""
    errors: dict[int, str] = {}
    seen_ldn: dict[str, int] = {}
    seen_title: dict[bytes, int] = {}
    for i, (meter, keys) in enumerate(meters):
        try:
            for ek, ak in keys.values():
                _check_keys(ek, ak)
        except ValueError as exc:
            errors[i] = str(exc)
        if keys and master is None and not check_only:
            raise ConfigurationError("meter keys need a master key (SAC_MASTER_KEY)")
        if meter.ldn in seen_ldn:
            errors[i] = f"LDN {meter.ldn} is also item #{seen_ldn[meter.ldn]}"
        seen_ldn.setdefault(meter.ldn, i)
        if meter.system_title is not None:
            if meter.system_title in seen_title:
                errors[i] = f"the system title is also item #{seen_title[meter.system_title]}"
            seen_title.setdefault(meter.system_title, i)
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
        part = titles[start : start + 500]
        rows = yield Query(
            "SELECT ldn, system_title FROM meters"
            f" WHERE system_title IN ({', '.join('?' * len(part))})",
            part,
        )
        for ldn, title in rows:
            errors.setdefault(
                seen_title[bytes(title)], f"meter {ldn} already has this system title"
            )
    if errors:
        raise BulkError(errors)
    if check_only:
        raise CheckedOnly()
    # set-based: one statement for the meters, one for their keys, whatever the count
    inserted = yield InsertRows(
        "meters",
        _NEW_METER_COLUMNS,
        [
            (
                m.ldn,
                m.pdr,
                m.system_title,
                m.profile,
                m.address,
                ",".join(m.allowed_ips),
                now,
                now,
                m.poll_interval,
            )
            for m, _ in meters
        ],
        returning=_METER_COLUMNS,
    )
    added = {meter.ldn: meter for meter in map(_meter, inserted)}
    missing = [m.ldn for m, _ in meters if m.ldn not in added]
    if missing:  # added by another transaction since the checks
        raise Conflict(f"a meter with LDN {missing[0]} is already present")
    key_rows = [
        (added[m.ldn].id, sap, role, master.wrap(key, key_place(m.ldn, sap, role)), now)  # type: ignore[union-attr]
        for m, keys in meters
        for sap, (ek, ak) in sorted(keys.items())
        for role, key in (("ek", ek), ("ak", ak if ak is not None else ek))
    ]
    if key_rows:
        yield InsertRows("meter_keys", _KEY_COLUMNS, key_rows)
    return [added[m.ldn] for m, _ in meters]


def update_meter(ldn: str, changes: Mapping[str, Any], now: dt.datetime) -> Transaction:
    """Change some of a meter's :data:`METER_FIELDS` and its ``state``; the meter as it is
    now.  Conflict when the new system title is another meter's."""
    unknown = set(changes) - {*METER_FIELDS, "state"}
    if unknown:
        raise ValueError(f"no meter field {', '.join(sorted(unknown))}")
    current = yield Query(f"SELECT {_METER_COLUMNS} FROM meters WHERE ldn = ?", (ldn,))
    if not current:
        raise UnknownMeter(ldn)
    meter = _meter(current[0])
    # the same rules as a new meter's: build one with the changes applied
    merged = {f: getattr(meter, f) for f in METER_FIELDS}
    merged.update({k: v for k, v in changes.items() if k != "state"})
    # (the LDN does not change: a meter added before today's LDN rule keeps its own)
    NewMeter("0" * 16, **{k: (tuple(v) if k == "allowed_ips" else v) for k, v in merged.items()})
    title = changes.get("system_title")
    if title is not None and title != meter.system_title:
        taken = yield Query("SELECT ldn FROM meters WHERE system_title = ?", (title,))
        if taken:
            raise Conflict(f"meter {taken[0][0]} already has this system title")
    sets, params = ["updated = ?"], [now]
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
        f"UPDATE meters SET {', '.join(sets)} WHERE ldn = ? RETURNING {_METER_COLUMNS}",
        [*params, ldn],
    )
    return _meter(rows[0])


def update_meters(
    items: Sequence[tuple[str, Mapping[str, Any]]],
    now: dt.datetime,
    master: MasterKey | None,
    check_only: bool = False,
) -> Transaction:
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
                _check_keys(ek, ak)
            if keys and master is None:
                raise ConfigurationError("meter keys need a master key (SAC_MASTER_KEY)")
            meter = yield from update_meter(ldn, fields, now)
            for sap, (ek, ak) in sorted(keys.items()):
                yield from _write_keys(master, meter.id, ldn, sap, ek, ak, now)  # type: ignore[arg-type]
            done.append(meter)
        except (ValueError, StorageError) as exc:
            errors[i] = str(exc)
    if errors:
        raise BulkError(errors)  # the backend rolls back the items already changed
    if check_only:
        raise CheckedOnly()  # the same: nothing changes
    return done


def delete_meters(ldns: Sequence[str], purge: bool, check_only: bool = False) -> Transaction:
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


def has_keys(ldn: str, client_sap: int) -> Transaction:
    """Whether the meter's keys for a client are set (without unwrapping them)."""
    meter_id = yield from _meter_id(ldn)
    rows = yield Query(
        "SELECT 1 FROM meter_keys WHERE meter_id = ? AND client_sap = ? LIMIT 1",
        (meter_id, client_sap),
    )
    return bool(rows)


def delete_meter(ldn: str, purge: bool) -> Transaction:
    """Remove a meter with its keys and counters.  One with readings or events is kept
    (Conflict) unless ``purge``: then its whole history goes too."""
    meter_id = yield from _meter_id(ldn)
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


# --- API tokens ---------------------------------------------------------------------------

_TOKEN_COLUMNS = "t.id, t.name, t.created, t.last_used, t.revoked, " + ", ".join(
    f"u.{column}" for column in _USER_COLUMNS.split(", ")
)


def _token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(row[0], row[1], _user(row[5:]), when(row[2]), when(row[3]), when(row[4]))  # type: ignore[arg-type]


def create_api_token(user_name: str, name: str, token: str, now: dt.datetime) -> Transaction:
    if not (1 <= len(name) <= 100) or not name.isprintable():
        raise ValueError("a token's name is 1 to 100 printable characters")
    users = yield Query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (user_name,))
    if not users:
        raise UnknownUser(user_name)
    user: User = _user(users[0])
    rows = yield Query(
        "INSERT INTO api_tokens (token_hash, user_id, name, created) VALUES (?, ?, ?, ?)"
        " RETURNING id",
        (token_hash(token), user.id, name, now),
    )
    return ApiToken(rows[0][0], name, user, now, None, None)


def api_token(token: str, now: dt.datetime) -> Transaction:
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


def api_tokens() -> Transaction:
    rows = yield Query(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id"
    )
    return [_token(row) for row in rows]


def revoke_api_token(token_id: int, now: dt.datetime) -> Transaction:
    rows = yield Query(
        "UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL RETURNING name",
        (now, token_id),
    )
    if not rows:
        exists = yield Query("SELECT 1 FROM api_tokens WHERE id = ?", (token_id,))
        if not exists:
            raise KeyError(f"no API token #{token_id}")
    return rows[0][0] if rows else None
