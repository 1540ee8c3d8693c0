"""IStore: what the rest of the SAC asks of its memory.  Every method is asynchronous."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import Interface, implementer

from sac.dlms import Obis
from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.store import schema
from sac.store import transactions as tx
from sac.store.keycsv import KeyRow
from sac.store.model import Meter, MeterKeys, MeterState, NewMeter, Reading

__all__ = ["IStore", "Store"]


class IStore(Interface):
    async def open(upto: int | None = None) -> tuple[int, int]:
        """Apply the migrations (up to version ``upto``: for upgrade tests) and check the
        master key; (schema version found, version now)."""

    async def close() -> None:
        """Release the connections."""

    async def add_meter(meter: NewMeter) -> Meter:
        """Add a meter; Conflict when its LDN or system title is taken."""

    async def get_meter(ldn: str) -> Meter | None:
        """The meter with this LDN."""

    async def meter_by_system_title(title: bytes) -> Meter | None:
        """The meter with this system title (how a push is identified)."""

    async def set_meter_state(ldn: str, state: MeterState) -> None:
        """Enable or disable a meter."""

    async def set_keys(ldn: str, client_sap: int, ek: bytes, ak: bytes | None = None) -> None:
        """Store a meter's keys for a client, wrapped; AK defaults to EK."""

    async def keys(ldn: str, client_sap: int) -> MeterKeys | None:
        """A meter's keys for a client, in clear (in memory only)."""

    async def reserve_invocation_counters(ldn: str, client_sap: int, count: int = 1) -> int:
        """The first of ``count`` counters of ours, stored as used before they are."""

    async def raise_invocation_counter(ldn: str, client_sap: int, used: int) -> None:
        """The meter has seen ``used`` (its frame counter): reserve above it from now on."""

    async def accept_peer_counter(ldn: str, client_sap: int, counter: int) -> bool:
        """Record the meter's counter when newer than the last: False for a replay."""

    async def invocation_counters(ldn: str, client_sap: int) -> tuple[int, int | None]:
        """(the last of ours reserved, the last of theirs accepted)."""

    async def rotate_master_key(new: MasterKey) -> int:
        """Re-wrap every key under ``new`` in one transaction; the number of keys."""

    async def import_keys(rows: Sequence[KeyRow], replace: bool = False) -> int:
        """Set the keys of parsed CSV rows, all or none; KeyImportError lists every bad line
        (unknown meter, keys already present unless ``replace``)."""

    async def add_readings(readings: Sequence[Reading]) -> int:
        """Store a batch of readings of many meters in one transaction (all or none)."""

    async def last_readings(
        ldn: str, obis: Obis, attribute: int = 2, limit: int = 1
    ) -> list[Reading]:
        """The latest readings of one attribute of one meter, newest first."""

    async def count_readings() -> int:
        """How many readings the store holds."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@implementer(IStore)
class Store:
    """IStore on top of one method a backend provides: run a transaction generator."""

    dialect = ""

    def __init__(
        self, master_key: MasterKey | None, clock: Callable[[], dt.datetime] = _utc_now
    ) -> None:
        self._master = master_key
        self._clock = clock

    async def _run(self, transaction: tx.Transaction) -> Any:
        raise NotImplementedError("a backend runs transactions")

    def _master_key(self) -> MasterKey:
        if self._master is None:
            raise ConfigurationError("meter keys need a master key (SAC_MASTER_KEY)")
        return self._master

    async def open(self, upto: int | None = None) -> tuple[int, int]:
        migrations = schema.load_migrations(self.dialect)[:upto]
        versions = await self._run(schema.migrate(migrations, self._clock()))
        await self._run(tx.check_master_key(self._master))
        return versions

    async def close(self) -> None:
        raise NotImplementedError("a backend closes its connections")

    async def add_meter(self, meter: NewMeter) -> Meter:
        return await self._run(tx.add_meter(meter, self._clock()))

    async def get_meter(self, ldn: str) -> Meter | None:
        return await self._run(tx.get_meter(ldn))

    async def meter_by_system_title(self, title: bytes) -> Meter | None:
        return await self._run(tx.meter_by_system_title(title))

    async def set_meter_state(self, ldn: str, state: MeterState) -> None:
        await self._run(tx.set_meter_state(ldn, state, self._clock()))

    async def set_keys(self, ldn: str, client_sap: int, ek: bytes, ak: bytes | None = None) -> None:
        await self._run(tx.set_keys(self._master_key(), ldn, client_sap, ek, ak, self._clock()))

    async def keys(self, ldn: str, client_sap: int) -> MeterKeys | None:
        return await self._run(tx.get_keys(self._master_key(), ldn, client_sap))

    async def reserve_invocation_counters(self, ldn: str, client_sap: int, count: int = 1) -> int:
        return await self._run(tx.reserve_invocation_counters(ldn, client_sap, count))

    async def raise_invocation_counter(self, ldn: str, client_sap: int, used: int) -> None:
        await self._run(tx.raise_invocation_counter(ldn, client_sap, used))

    async def accept_peer_counter(self, ldn: str, client_sap: int, counter: int) -> bool:
        return await self._run(tx.accept_peer_counter(ldn, client_sap, counter))

    async def invocation_counters(self, ldn: str, client_sap: int) -> tuple[int, int | None]:
        return await self._run(tx.invocation_counters(ldn, client_sap))

    async def rotate_master_key(self, new: MasterKey) -> int:
        count = await self._run(tx.rotate_master_key(self._master_key(), new))
        self._master = new
        return count

    async def import_keys(self, rows: Sequence[KeyRow], replace: bool = False) -> int:
        return await self._run(tx.import_keys(self._master_key(), rows, replace, self._clock()))

    async def add_readings(self, readings: Sequence[Reading]) -> int:
        if not readings:
            return 0
        return await self._run(tx.add_readings(readings))

    async def last_readings(
        self, ldn: str, obis: Obis, attribute: int = 2, limit: int = 1
    ) -> list[Reading]:
        return await self._run(tx.last_readings(ldn, obis, attribute, limit))

    async def count_readings(self) -> int:
        return await self._run(tx.count_readings())
