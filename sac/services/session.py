"""The SAC as DLMS client of one meter for one session: identification, the Management
association with its counters, reads, commands.

Both flows use it: a push session (the meter called; its socket carries our requests after
its notification) and a poll (we called).  It talks through a :class:`~sac.protocols.link.Link`
and keeps its counters in the store:

* the Public client (no ciphering) reads the LDN and the Management frame counter FC;
* the Management client's invocation counters are reserved in the store *before* they are
  sent (a block at a time), starting at FC + 1 -- a restart never sends a counter twice;
* a meter that refuses our counter (exception-response, invocation-counter error) names the
  one it expects: the store is raised to it and the request is sent once more;
* the meter's own counter is recorded in the store when the session ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from sac.dlms import Obis
from sac.dlms.association import ClientAssociation
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.xdlms import SelectiveAccess
from sac.errors import ProtocolError, RemoteProtocolError, SacError
from sac.profiles import CosemRef, IMeterProfile
from sac.protocols.link import AccessError, Link
from sac.services import commands as cmd
from sac.services.readings import (
    BATTERY,
    INDEX,
    Capture,
    meter_time,
    reading_of,
    rows_to_events,
    rows_to_readings,
    status_of,
)
from sac.store.interface import IStore
from sac.store.model import Command, Ingest, Meter, MeterStatus, Reading
from sac.store.operations import CommandStateError

__all__ = ["SAC_SYSTEM_TITLE", "MeterSession", "SessionSettings"]

SAC_SYSTEM_TITLE = b"SACSACSA"  # spec section 3 (configurable)
SERVICE_ERROR_INVOCATION_COUNTER = 6


@dataclass(frozen=True, slots=True)
class SessionSettings:
    system_title: bytes = SAC_SYSTEM_TITLE
    counter_block: int = 64  # counters reserved at a time
    poll_days: int = 7  # how far back a poll reads the daily profile and the logbooks
    max_receive_pdu: int = 0xFFFF
    name: str = "sac"  # this process, in the command log


class MeterSession:
    log = Logger()

    def __init__(
        self,
        link: Link,
        store: IStore,
        profile: IMeterProfile,
        *,
        settings: SessionSettings,
        now: Callable[[], dt.datetime],
        source: str,
        meter: Meter | None = None,
    ) -> None:
        self.link = link
        self.store = store
        self.profile = profile
        self.settings = settings
        self.now = now
        self.source = source
        self.meter = meter
        self.management: ClientAssociation | None = None
        self._reserved_last = -1
        self._scalers: dict[Obis, tuple[int, int]] = {}
        self.requests = 0

    @property
    def ldn(self) -> str:
        assert self.meter is not None
        return self.meter.ldn

    @property
    def sap(self) -> int:
        return int(self.profile.clients["management"])

    # --- the Public client --------------------------------------------------------------

    async def identify(self) -> tuple[str, int]:
        """Public association: AARQ, GET the LDN and the Management frame counter, RLRQ."""
        public = self.link.attach(
            ClientAssociation(
                int(self.profile.clients["public"]),
                1,
                max_receive_pdu=self.settings.max_receive_pdu,
            )
        )
        try:
            await self.link.associate(public)
            ldn_value = await self.link.get(public, self.profile.objects["ldn"])
            fc = await self.link.get(public, self.profile.objects["frame_counter_management"])
            await self.link.release(public)
        finally:
            self.link.detach(public)
        raw = bytes(ldn_value) if isinstance(ldn_value, bytes) else str(ldn_value).encode()
        try:
            ldn = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"the meter's LDN {raw.hex()} is not text") from None
        if not isinstance(fc, int) or isinstance(fc, bool):
            raise RemoteProtocolError(f"the meter's frame counter {fc!r} is not a number")
        return ldn, int(fc)

    # --- the Management client ----------------------------------------------------------

    async def open_management(self, frame_counter: int | None) -> None:
        """The pre-established Management association, its counters from FC + 1."""
        meter = self.meter
        assert meter is not None
        if meter.system_title is None:
            raise SacError(f"meter {meter.ldn} has no system title: cannot cipher to it")
        keys = await self.store.keys(meter.ldn, self.sap)
        if keys is None:
            raise SacError(f"meter {meter.ldn} has no key for client {self.sap}")
        if frame_counter is not None:
            await self.store.raise_invocation_counter(meter.ldn, self.sap, frame_counter)
        first = await self.store.reserve_invocation_counters(
            meter.ldn, self.sap, self.settings.counter_block
        )
        _, theirs = await self.store.invocation_counters(meter.ldn, self.sap)
        self._reserved_last = first + self.settings.counter_block - 1
        security = SecurityContext(
            Suite0Cipher(keys.ek, keys.ak),
            self.settings.system_title,
            peer_system_title=meter.system_title,
            invocation_counter=first,
            peer_invocation_counter=theirs,
            omit_system_title=bool(self.profile.omit_system_title),
        )
        self.management = self.link.attach(
            ClientAssociation(
                self.sap,
                1,
                security=security,
                pre_established=True,
                max_receive_pdu=self.settings.max_receive_pdu,
                server_max_receive_pdu=int(self.profile.max_pdu),
            )
        )

    async def _counters(self) -> None:
        """Reserve more counters when the block is nearly used (a block GET uses one a block)."""
        assert self.management is not None and self.management.security is not None
        security = self.management.security
        if security.invocation_counter + self.settings.counter_block // 2 > self._reserved_last:
            await self.store.raise_invocation_counter(
                self.ldn, self.sap, security.invocation_counter - 1
            )
            first = await self.store.reserve_invocation_counters(
                self.ldn, self.sap, self.settings.counter_block
            )
            security.invocation_counter = first
            self._reserved_last = first + self.settings.counter_block - 1

    async def _call(self, request: Callable[[ClientAssociation], Any]) -> Any:
        """One Management request, sent again once when the meter wants a newer counter."""
        association = self.management
        if association is None:
            raise ProtocolError("the Management association is not open")
        await self._counters()
        self.requests += 1
        try:
            return await request(association)
        except RemoteProtocolError as exc:
            expected = exc.invocation_counter
            if exc.wire_code != SERVICE_ERROR_INVOCATION_COUNTER or expected is None:
                raise
            self.log.info(
                "meter {ldn}: it expects invocation counter {expected}; moving on to it",
                ldn=self.ldn,
                expected=expected,
            )
            assert association.security is not None
            await self.store.raise_invocation_counter(self.ldn, self.sap, expected - 1)
            self._reserved_last = -1  # reserve afresh, above what the meter expects
            await self._counters()
            return await request(association)

    async def get(self, ref: CosemRef, access: SelectiveAccess | None = None) -> Any:
        return await self._call(lambda a: self.link.get(a, ref, access))

    async def set(self, ref: CosemRef, value: Any) -> None:
        await self._call(lambda a: self.link.set(a, ref, value))

    async def action(self, ref: CosemRef, method: int, parameters: Any) -> Any:
        return await self._call(lambda a: self.link.action(a, ref, method, parameters))

    async def close(self) -> None:
        """End the Management association and record the meter's last counter."""
        association, self.management = self.management, None
        if association is None:
            return
        self.link.detach(association)
        security = association.security
        if security is not None and security.peer_invocation_counter is not None:
            await self.store.accept_peer_counter(
                self.ldn, self.sap, security.peer_invocation_counter
            )

    # --- values to store ----------------------------------------------------------------

    async def scaler_unit(self, ref: CosemRef) -> tuple[int, int] | None:
        """A register's scaler_unit (attribute 3), read once a session."""
        if ref.class_id not in (3, 4):
            return None
        if ref.obis not in self._scalers:
            value = await self.get(ref.at(3))
            try:
                self._scalers[ref.obis] = (int(value[0]), int(value[1]))
            except (TypeError, ValueError, IndexError):
                raise RemoteProtocolError(f"scaler_unit of {ref.obis}: {value!r}") from None
        return self._scalers[ref.obis]

    def reading(
        self,
        ref: CosemRef,
        value: Any,
        captured: dt.datetime | None = None,
        scaler_unit: tuple[int, int] | None = None,
    ) -> Reading:
        if scaler_unit is None and ref.attribute == 2:
            scaler_unit = self._scalers.get(ref.obis)
        return reading_of(
            self.ldn,
            ref,
            value,
            received=self.now(),
            source=self.source,
            captured=captured or self.now(),
            scaler_unit=scaler_unit,
        )

    def status(self, **values: Any) -> MeterStatus:
        return MeterStatus(self.ldn, connected=self.now(), at=self.now(), **values)

    async def read_profile(self, quantity: str, start: dt.datetime, end: dt.datetime) -> Ingest:
        """A load profile's readings or a logbook's events between two times."""
        ref = self.profile.objects[quantity]
        columns = Capture.parse(await self.get(ref.at(3)))
        inverted = bool(self.profile.inverted_deviation)
        access = cmd.range_access(columns, start, end, inverted=inverted)
        rows = await self.get(ref, access)
        if quantity == "daily_profile":
            for c in columns:
                if c.class_id in (3, 4) and c.attribute == 2:
                    await self.scaler_unit(CosemRef(c.class_id, c.obis, 2))
            readings = rows_to_readings(
                self.ldn,
                columns,
                rows,
                scalers=self._scalers,
                inverted_deviation=inverted,
                received=self.now(),
                source=self.source,
            )
            return Ingest(readings=readings)
        events = rows_to_events(
            self.ldn,
            ref.obis,
            columns,
            rows,
            inverted_deviation=inverted,
            received=self.now(),
            source=self.source,
        )
        return Ingest(events=events)

    async def poll(self) -> Ingest:
        """Everything the list and the detail page show: the meter's clock, LDN, PDR, the
        volumes, diagnostic, battery, valve; the daily profile and the logbooks of the last
        days."""
        objects = self.profile.objects
        inverted = bool(self.profile.inverted_deviation)
        clock = await self.get(objects["clock"])
        at = (
            meter_time(bytes(clock), inverted_deviation=inverted)
            if isinstance(clock, bytes)
            else None
        )
        readings: list[Reading] = [self.reading(objects["clock"], clock, at)]
        values: dict[str, Any] = {}
        for quantity in (
            "ldn",
            "pdr",
            "converted_volume_index",
            "converted_volume_index_under_alarm",
            "current_diagnostic",
            "battery_autonomy",
        ):
            ref = objects.get(quantity)
            if ref is None:
                continue
            try:
                value = await self.get(ref)
                scaler = await self.scaler_unit(ref)
            except AccessError as exc:
                self.log.info("meter {ldn}: {q} not read: {e}", ldn=self.ldn, q=quantity, e=exc)
                continue
            values[quantity] = value
            readings.append(self.reading(ref, value, at, scaler))
        valve = objects["valve"]
        for attribute, name in ((2, "valve_output"), (3, "valve_state")):
            value = await self.get(valve.at(attribute))
            values[name] = value
            readings.append(self.reading(valve.at(attribute), value, at))
        index = next((r for r in readings if r.obis == INDEX and r.attribute == 2), None)
        battery_unit = self._scalers.get(BATTERY, (0, int(self.profile.battery_unit)))[1]
        status = status_of(
            self.ldn, values, connected=self.now(), at=at, index=index, battery_unit=battery_unit
        )
        batch = Ingest(readings=readings, statuses=[status])
        end = self.now()
        start = end - dt.timedelta(days=self.settings.poll_days)
        parts = [batch]
        for quantity in ("daily_profile", "event_logbook", "metrological_logbook"):
            parts.append(await self.read_profile(quantity, start, end))
        return merge(parts)

    # --- commands -----------------------------------------------------------------------

    async def run_commands(self, claimed: list[Command], deadline: float, clock: Any) -> Ingest:
        """Run claimed commands in order until ``deadline`` (reactor seconds): each one
        finished in the store as it ends; the ones not reached go back to the queue."""
        batches: list[Ingest] = []
        for i, command in enumerate(claimed):
            if clock.seconds() >= deadline:
                for rest in claimed[i:]:
                    await self.store.retry_command(rest.id, "the session's time budget ran out")
                break
            try:
                outcome = await cmd.execute(self, command)
            except (AccessError, cmd.CommandError) as exc:
                outcome = cmd.Outcome(False, str(exc))
            except RemoteProtocolError as exc:
                if exc.wire_code is None:  # the stream broke: nothing more on this link
                    await self._requeue(claimed[i:], str(exc))
                    raise
                outcome = cmd.Outcome(False, str(exc))
            except SacError as exc:
                await self._requeue(claimed[i:], str(exc))
                raise
            batches.append(outcome.ingest)
            if outcome.ok is None:
                await self.store.retry_command(command.id, outcome.result)
            else:
                await self.store.finish_command(command.id, outcome.ok, outcome.result)
            self.log.info(
                "meter {ldn}: command {id} {kind}: {state} ({result})",
                ldn=self.ldn,
                id=command.id,
                kind=command.kind,
                state="done" if outcome.ok else ("failed" if outcome.ok is False else "pending"),
                result=outcome.result,
            )
        return merge(batches)

    async def _requeue(self, commands: list[Command], why: str) -> None:
        await requeue(self.store, commands, why)


async def requeue(store: IStore, commands: list[Command], why: str) -> None:
    """Claimed commands a session did not finish go back to the queue (one conditional
    update each: a command already finished stays as it is)."""
    for command in commands:
        try:
            await store.retry_command(command.id, why)
        except CommandStateError:
            pass  # done or failed in this session before it broke
        except SacError as exc:
            MeterSession.log.warn("command {id}: not requeued: {e}", id=command.id, e=exc)


def merge(parts: list[Ingest]) -> Ingest:
    return Ingest(
        readings=[r for p in parts for r in p.readings],
        events=[e for p in parts for e in p.events],
        statuses=[s for p in parts for s in p.statuses],
        counters=[c for p in parts for c in p.counters],
    )
