"""Meter keys: each meter's EK and AK per client, wrapped under the master key; the master
key checked at start and rotated; keys imported from CSV, all or none."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from zope.interface import Interface, implementer

from sac.errors import ConfigurationError, InvalidRequest, KeyImportError
from sac.keys import MasterKey, key_place, wrapped_by
from sac.store.audit import audited
from sac.store.keycsv import KeyRow, RowError
from sac.store.model import Actor, MeterKeys
from sac.store.sql import BATCH_ROWS, Component, Exec, Query, Transaction, id_of, ids_of

__all__ = ["IKeys", "KeysComponent", "check_keys", "check_master_key", "write_keys"]


def check_master_key(master: MasterKey | None) -> Transaction[None]:
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


def rotate_master_key(old: MasterKey, new: MasterKey) -> Transaction[int]:
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


def check_keys(ek: bytes, ak: bytes | None) -> None:
    for name, key in (("EK", ek), ("AK", ak)):
        if key is not None and len(key) != 16:
            raise InvalidRequest(f"the {name} must be 16 bytes")


def set_keys(
    master: MasterKey, ldn: str, client_sap: int, ek: bytes, ak: bytes | None, now: dt.datetime
) -> Transaction[None]:
    check_keys(ek, ak)
    meter_id = yield from id_of(ldn)
    yield from write_keys(master, meter_id, ldn, client_sap, ek, ak, now)


def write_keys(
    master: MasterKey,
    meter_id: int,
    ldn: str,
    client_sap: int,
    ek: bytes,
    ak: bytes | None,
    now: dt.datetime,
    held: dict[str, bytes] | None = None,
) -> Transaction[bool]:
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
    if _same_keys(master, ldn, client_sap, held, new):
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


def _same_keys(
    master: MasterKey, ldn: str, client_sap: int, held: dict[str, bytes], new: dict[str, bytes]
) -> bool:
    """Whether the wrapped keys ``held`` (by role) are the keys ``new``."""
    if not held or held.keys() != new.keys():
        return False
    place = functools.partial(key_place, ldn, client_sap)
    return all(master.unwrap(blob, place(role)) == new[role] for role, blob in held.items())


def _held_keys(meter_ids: Sequence[int]) -> Transaction[dict[tuple[int, int], dict[str, bytes]]]:
    """{(meter id, client): {role: wrapped key}} of ``meter_ids``, a few hundred a query."""
    wanted = sorted(set(meter_ids))
    held: dict[tuple[int, int], dict[str, bytes]] = {}
    for i in range(0, len(wanted), BATCH_ROWS):
        part = wanted[i : i + BATCH_ROWS]
        rows = yield Query(
            "SELECT meter_id, client_sap, role, wrapped FROM meter_keys"
            f" WHERE meter_id IN ({', '.join('?' * len(part))})",
            part,
        )
        for meter_id, sap, role, blob in rows:
            held.setdefault((meter_id, sap), {})[role] = bytes(blob)
    return held


def get_keys(master: MasterKey, ldn: str, client_sap: int) -> Transaction[MeterKeys | None]:
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


def import_keys(
    master: MasterKey, rows: Sequence[KeyRow], replace: bool, now: dt.datetime
) -> Transaction[int]:
    """Set the keys of ``rows`` (KeyRow), all or none; KeyImportError lists every bad line."""
    ids = yield from ids_of({r.ldn for r in rows})
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
        yield from write_keys(master, place[0], r.ldn, r.client_sap, r.ek, r.ak, now, before)
        written.add(place)
    return len(rows)


def has_keys(ldn: str, client_sap: int) -> Transaction[bool]:
    """Whether the meter's keys for a client are set (without unwrapping them)."""
    meter_id = yield from id_of(ldn)
    rows = yield Query(
        "SELECT 1 FROM meter_keys WHERE meter_id = ? AND client_sap = ? LIMIT 1",
        (meter_id, client_sap),
    )
    return bool(rows)


class IKeys(Interface):
    async def set(
        ldn: str, client_sap: int, ek: bytes, ak: bytes | None = None, by: Actor | None = None
    ) -> None:
        """Store a meter's keys for a client, wrapped; AK defaults to EK."""

    async def get(ldn: str, client_sap: int) -> MeterKeys | None:
        """A meter's keys for a client, in clear (in memory only)."""

    async def has(ldn: str, client_sap: int) -> bool:
        """Whether a meter's keys for a client are set (they stay wrapped); UnknownMeter."""

    async def import_rows(
        rows: Sequence[KeyRow], replace: bool = False, by: Actor | None = None
    ) -> int:
        """Set the keys of parsed CSV rows, all or none; KeyImportError lists every bad line
        (unknown meter, keys already present unless ``replace``)."""

    async def rotate_master(new: MasterKey, by: Actor | None = None) -> int:
        """Re-wrap every key under ``new`` in one transaction; the number of keys."""


@implementer(IKeys)
class KeysComponent(Component):
    async def set(
        self,
        ldn: str,
        client_sap: int,
        ek: bytes,
        ak: bytes | None = None,
        by: Actor | None = None,
    ) -> None:
        now = self.db.now()
        change = set_keys(self.db.master_key(), ldn, client_sap, ek, ak, now)
        await self.db.change(
            audited(change, by, "set keys", ldn, now, f"client {client_sap}"), [ldn]
        )

    async def get(self, ldn: str, client_sap: int) -> MeterKeys | None:
        return await self.db.run(get_keys(self.db.master_key(), ldn, client_sap))

    async def has(self, ldn: str, client_sap: int) -> bool:
        return await self.db.run(has_keys(ldn, client_sap))

    async def import_rows(
        self, rows: Sequence[KeyRow], replace: bool = False, by: Actor | None = None
    ) -> int:
        now = self.db.now()
        change = import_keys(self.db.master_key(), rows, replace, now)
        detail = f"{len(rows)} rows" + (", replacing" if replace else "")
        audited_change = audited(change, by, "import keys", None, now, detail)
        return await self.db.change(audited_change, {r.ldn for r in rows})

    async def rotate_master(self, new: MasterKey, by: Actor | None = None) -> int:
        now = self.db.now()
        change = rotate_master_key(self.db.master_key(), new)
        detail = f"to {new.id_hex}"
        count = await self.db.run(audited(change, by, "rotate master key", None, now, detail))
        self.db.set_master_key(new)
        return count
