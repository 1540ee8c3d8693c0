"""The SAC as DLMS client of one meter for one session: identification, the Management
association with its counters, reads, commands.

Both flows use it: a push session (the meter called; its socket carries our requests after
its notification) and a poll (we called).  It talks through an
:class:`~sac.protocols.interface.ILink` and keeps its counters in the store.

Invocation counters (the GCM IV is the system title and the counter: a counter sent twice
under one key breaks the ciphering):

* ours are reserved in the store *before* they are sent (a block at a time): a restart never
  sends a counter twice;
* the store keeps the highest of ours the meter has *proven* it accepted: the FC field of an
  authenticated compact frame, or an authenticated answer to a request we sent at it;
* what is not authenticated -- the Public client's frame-counter read, an unciphered
  exception-response naming the counter the meter expects -- is a *hint*: the session
  follows one hint, once, and only to a counter inside ``counter_window`` above the proven
  one and short of ``counter_margin`` below 2^32.  A forged hint then wastes a bounded
  number of counters and never locks the genuine meter out; a hint beyond the window is
  refused and said so;
* the meter's own counter is recorded in the store when the session ends.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from sac.dlms import Obis
from sac.dlms.association import ClientAssociation
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.xdlms import SelectiveAccess
from sac.errors import CodecError, ProtocolError, RemoteProtocolError, SacError
from sac.profiles import CosemRef, IMeterProfile
from sac.protocols.interface import AccessError, ILink, LinkClosed, ResponseTimeout
from sac.services import commands as cmd
from sac.services.command_run import record, requeue
from sac.services.ingest import merge
from sac.services.readings import (
    Capture,
    meter_time,
    reading_of,
    rows_to_events,
    rows_to_readings,
    status_of,
)
from sac.store.model import Command, Ingest, Meter, MeterStatus, Reading

if TYPE_CHECKING:
    from sac.store.counters import ICounters
    from sac.store.keys import IKeys
    from sac.store.meters import IMeters

__all__ = ["SAC_SYSTEM_TITLE", "MeterSession", "SessionSettings", "SessionStore", "merge"]

SAC_SYSTEM_TITLE = b"SACSACSA"  # docs/uni-ts-11291.md §3 (configurable)
SERVICE_ERROR_INVOCATION_COUNTER = 6
LAST_COUNTER = 0xFFFFFFFF


# the objects of the meter list a poll reads (the valve's besides), when the profile has them
_LIST_OBJECTS = (
    "ldn",
    "pdr",
    "converted_volume_index",
    "converted_volume_index_under_alarm",
    "current_diagnostic",
    "battery_autonomy",
)


class CounterHintRefused(RemoteProtocolError):
    """An unauthenticated answer asked for a counter the session will not move to (beyond
    the window above the proven counter, too near 2^32, or a second hint): nothing more can
    be sent in this session.  Not the meter's word, so no command fails for good on it."""


class SessionStore(cmd.CommandStore, Protocol):
    """The parts of the store a session reaches: the meter's keys, its invocation counters,
    its commands and its record (what a command confirmed)."""

    @property
    def keys(self) -> IKeys: ...

    @property
    def counters(self) -> ICounters: ...

    @property
    def meters(self) -> IMeters: ...


@dataclass(frozen=True, slots=True)
class SessionSettings:
    system_title: bytes = SAC_SYSTEM_TITLE
    counter_block: int = 64  # counters reserved at a time
    poll_days: int = 7  # how far back a first read of the daily profile or a logbook goes
    read_plan: bool = True  # push sessions read what the profile's read plan has due
    max_receive_pdu: int = 0xFFFF
    name: str = "sac"  # this process, in the command log
    # how far above the proven counter an unauthenticated hint may move ours
    counter_window: int = 1 << 16
    # no hint moves ours within this many of 2^32 (the key's last counters)
    counter_margin: int = 1 << 20
    # sessions a command may take (claims) before a failure that is not the meter's
    # authenticated word fails it for good
    command_attempts: int = 10


class MeterSession:
    log = Logger()

    def __init__(
        self,
        link: ILink,
        store: SessionStore,
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
        self._proven = 0  # the highest of our counters the meter proved it accepted
        self._accepted = -1  # ... of this session's, by an authenticated answer
        self._hinted = False  # an unauthenticated counter hint was followed
        self.scalers: dict[Obis, tuple[int, int]] = {}  # (scaler, unit) read this session
        self.requests = 0
        # what the session read beyond the frame (quantities of the profile's objects) and
        # what it could not read, each with why: the connection's record
        self.read: list[str] = []
        self.skipped: list[str] = []
        self.broken: SacError | None = None  # why the link can take no more requests

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
            released = await self.link.release(public)
        finally:
            self.link.detach(public)
        if released is not None and released.quirk:
            self.log.info(
                "meter {ldn}: quirk: {quirk} (the release's content is not used)",
                ldn=self.meter.ldn if self.meter is not None else "?",
                quirk=released.quirk,
            )
        raw = bytes(ldn_value) if isinstance(ldn_value, bytes) else str(ldn_value).encode()
        try:
            ldn = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"the meter's LDN {raw.hex()} is not text") from None
        if not isinstance(fc, int) or isinstance(fc, bool):
            raise RemoteProtocolError(f"the meter's frame counter {fc!r} is not a number")
        return ldn, int(fc)

    # --- the Management client ----------------------------------------------------------

    async def open_management(self, frame_counter: int | None, *, proven: bool = False) -> None:
        """The pre-established Management association.  ``frame_counter``: the meter's FC
        for this client, ``proven`` when it came inside an authenticated frame (else it is
        the Public client's read: a hint)."""
        meter = self.meter
        assert meter is not None
        if meter.system_title is None:
            raise SacError(f"meter {meter.ldn} has no system title: cannot cipher to it")
        keys = await self.store.keys.get(meter.ldn, self.sap)
        if keys is None:
            raise SacError(f"meter {meter.ldn} has no key for client {self.sap}")
        state = await self.store.counters.state(meter.ldn, self.sap)
        self._proven = state.proven
        if frame_counter is not None and proven:
            await self.store.counters.prove(meter.ldn, self.sap, frame_counter)
            self._proven = max(self._proven, frame_counter)
        elif frame_counter is not None and frame_counter > state.ours:
            with contextlib.suppress(CounterHintRefused):  # then start from our own counter
                await self._follow_hint(frame_counter, "the Public client's frame counter")
        first = await self.store.counters.reserve(meter.ldn, self.sap, self.settings.counter_block)
        self._reserved_last = first + self.settings.counter_block - 1
        security = SecurityContext(
            Suite0Cipher(keys.ek, keys.ak),
            self.settings.system_title,
            peer_system_title=meter.system_title,
            invocation_counter=first,
            peer_invocation_counter=state.theirs,
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

    async def _follow_hint(self, used: int, source: str) -> None:
        """Unauthenticated data says the meter has seen our counter ``used``: reserve above
        it -- once a session, inside the window above the proven counter, never near 2^32
        -- or refuse (CounterHintRefused)."""
        limit = min(
            self._proven + self.settings.counter_window,
            LAST_COUNTER - self.settings.counter_margin,
        )
        why = ""
        if self._hinted:
            why = "a second unauthenticated counter hint in one session"
        elif used > limit:
            why = (
                f"{source} says {used}, beyond {limit}"
                f" (proven {self._proven} + window {self.settings.counter_window})"
            )
        if why:
            self.log.warn("meter {ldn}: counter hint not followed: {why}", ldn=self.ldn, why=why)
            raise CounterHintRefused(f"unauthenticated counter hint not followed: {why}")
        self._hinted = True
        self.log.info(
            "meter {ldn}: {source} says {used}: moving on above it (unauthenticated, once)",
            ldn=self.ldn,
            source=source,
            used=used,
        )
        await self.store.counters.raise_ours(self.ldn, self.sap, used)

    async def _counters(self) -> None:
        """Reserve more counters when the block is nearly used (a block GET uses one a block)."""
        assert self.management is not None and self.management.security is not None
        security = self.management.security
        if security.invocation_counter + self.settings.counter_block // 2 > self._reserved_last:
            await self.store.counters.raise_ours(
                self.ldn, self.sap, security.invocation_counter - 1
            )
            first = await self.store.counters.reserve(
                self.ldn, self.sap, self.settings.counter_block
            )
            security.invocation_counter = first
            self._reserved_last = first + self.settings.counter_block - 1

    async def _call(self, request: Callable[[ClientAssociation], Any]) -> Any:
        """One Management request, sent again once when the meter wants a newer counter
        (authenticated, or a hint the session may follow)."""
        association = self.management
        if association is None:
            raise ProtocolError("the Management association is not open")
        await self._counters()
        self.requests += 1
        try:
            return await self._answered(association, request)
        except RemoteProtocolError as exc:
            expected = exc.invocation_counter
            if exc.wire_code != SERVICE_ERROR_INVOCATION_COUNTER or expected is None:
                raise
            if exc.authenticated:
                if not 0 < expected <= LAST_COUNTER:
                    raise
                self.log.info(
                    "meter {ldn}: it expects invocation counter {expected}; moving on to it",
                    ldn=self.ldn,
                    expected=expected,
                )
                await self.store.counters.prove(self.ldn, self.sap, expected - 1)
                self._proven = max(self._proven, expected - 1)
            else:
                await self._follow_hint(max(expected - 1, 0), "an unciphered exception-response")
            self._reserved_last = -1  # reserve afresh, above what the meter expects
            await self._counters()
            return await self._answered(association, request)

    async def _answered(
        self, association: ClientAssociation, request: Callable[[ClientAssociation], Any]
    ) -> Any:
        """``request``; an answer that authenticates (a result, or a refusal carried
        ciphered) proves the meter accepted the counter it was sent with."""
        assert association.security is not None
        try:
            result = await request(association)
        except AccessError as exc:
            if exc.authenticated:
                self._accepted = association.security.invocation_counter - 1
            raise
        self._accepted = association.security.invocation_counter - 1
        return result

    async def get(self, ref: CosemRef, access: SelectiveAccess | None = None) -> Any:
        return await self._call(lambda a: self.link.get(a, ref, access))

    async def set(self, ref: CosemRef, value: Any) -> None:
        await self._call(lambda a: self.link.set(a, ref, value))

    async def action(self, ref: CosemRef, method: int, parameters: Any) -> Any:
        return await self._call(lambda a: self.link.action(a, ref, method, parameters))

    async def close(self) -> None:
        """End the Management association and record the counters it proved: the highest
        of ours the meter answered with authentication, and the meter's own last one.  Also
        after a failed session (what was proven stays proven)."""
        association, self.management = self.management, None
        if association is None:
            return
        self.link.detach(association)
        security = association.security
        if self._accepted > self._proven:
            await self.store.counters.prove(self.ldn, self.sap, self._accepted)
            self._proven = self._accepted
        if security is not None and security.peer_invocation_counter is not None:
            await self.store.counters.accept_theirs(
                self.ldn, self.sap, security.peer_invocation_counter
            )

    async def abandon(self) -> None:
        """After a failed session: record what it proved all the same (close), with a store
        failure logged, not raised over the session's own error."""
        try:
            await self.close()
        except SacError as exc:
            self.log.warn("meter {ldn}: counters not recorded: {e}", ldn=self.ldn, e=exc)

    # --- values to store ----------------------------------------------------------------

    async def scaler_unit(self, ref: CosemRef) -> tuple[int, int] | None:
        """A register's scaler_unit (attribute 3), read once a session."""
        if ref.class_id not in (3, 4):
            return None
        if ref.obis not in self.scalers:
            value = await self.get(ref.at(3))
            try:
                self.scalers[ref.obis] = (int(value[0]), int(value[1]))
            except (TypeError, ValueError, IndexError):
                raise RemoteProtocolError(f"scaler_unit of {ref.obis}: {value!r}") from None
        return self.scalers[ref.obis]

    def reading(
        self,
        ref: CosemRef,
        value: Any,
        captured: dt.datetime | None = None,
        scaler_unit: tuple[int, int] | None = None,
    ) -> Reading:
        if scaler_unit is None and ref.attribute == 2:
            scaler_unit = self.scalers.get(ref.obis)
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
        rejected: list[str] = []  # rows that do not decode: said, skipped, the rest kept
        try:
            return await self._rows_read(quantity, ref, columns, rows, rejected)
        finally:
            for note in rejected:
                self.skipped.append(f"{quantity}: {note}")
                self.log.warn("meter {ldn}: {what}: {note}", ldn=self.ldn, what=quantity, note=note)

    async def _rows_read(
        self, quantity: str, ref: CosemRef, columns: Any, rows: Any, rejected: list[str]
    ) -> Ingest:
        inverted = bool(self.profile.inverted_deviation)
        if quantity == "daily_profile":
            for c in columns:
                if c.class_id in (3, 4) and c.attribute == 2:
                    await self.scaler_unit(CosemRef(c.class_id, c.obis, 2))
            readings = rows_to_readings(
                self.ldn,
                columns,
                rows,
                scalers=self.scalers,
                inverted_deviation=inverted,
                received=self.now(),
                source=self.source,
                rejected=rejected,
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
            rejected=rejected,
            kinds=self.profile.events,
        )
        return Ingest(events=events)

    async def poll(self) -> Ingest:
        """Everything the list shows: the meter's clock, LDN, PDR, the volumes, diagnostic,
        battery, valve (the profile and the logbooks are the read plan's: sac.services.plan).

        Each object is read on its own: one the meter refuses (object-undefined...), or
        whose value does not decode, is left out -- ``skipped`` says which and why -- and
        the poll goes on.  When the link itself breaks, or the meter answers unciphered
        (a key it does not share, or a forgery), what was read before is returned all the
        same and ``broken`` says why."""
        readings: list[Reading] = []
        values: dict[str, Any] = {}
        at = await self.attempt("clock", self._read_clock(readings))
        for name, ref in self._list_objects():
            await self.attempt(name, self._read_value(name, ref, at, readings, values))
        status = self._polled_status(readings, values, at)
        # the meter's status (its last connection) once anything was read from it
        return Ingest(readings=readings, statuses=[status] if readings else [])

    async def _read_clock(self, readings: list[Reading]) -> dt.datetime | None:
        """The meter's clock, a reading; the time the values read after it are captured at."""
        ref = self.profile.objects["clock"]
        raw = await self.get(ref)
        inverted = bool(self.profile.inverted_deviation)
        at = meter_time(bytes(raw), inverted_deviation=inverted) if isinstance(raw, bytes) else None
        readings.append(self.reading(ref, raw, at))
        return at

    def _list_objects(self) -> list[tuple[str, CosemRef]]:
        """The objects of the meter list a poll reads, by name: those the profile has, then
        the valve's output and state."""
        objects = self.profile.objects
        found = [(name, objects[name]) for name in _LIST_OBJECTS if objects.get(name) is not None]
        valve = objects["valve"]
        return [*found, ("valve_output", valve.at(2)), ("valve_state", valve.at(3))]

    async def _read_value(
        self,
        name: str,
        ref: CosemRef,
        at: dt.datetime | None,
        readings: list[Reading],
        values: dict[str, Any],
    ) -> None:
        got = await self.get(ref)
        scaler = await self.scaler_unit(ref)
        readings.append(self.reading(ref, got, at, scaler))
        values[name] = got

    def _polled_status(
        self, readings: list[Reading], values: dict[str, Any], at: dt.datetime | None
    ) -> MeterStatus:
        """The meter's list values from what a poll read."""
        index_obis = self.profile.objects["converted_volume_index"].obis
        battery = self.profile.objects["battery_autonomy"]
        index = next((r for r in readings if r.obis == index_obis and r.attribute == 2), None)
        battery_unit = self.scalers.get(battery.obis, (0, int(self.profile.battery_unit)))[1]
        return status_of(
            self.ldn, values, connected=self.now(), at=at, index=index, battery_unit=battery_unit
        )

    async def attempt(self, what: str, read: Any) -> Any:
        """Await one part of a poll (a coroutine): its result, or None when the meter refused
        it, sent what does not decode, or the link broke (recorded in ``skipped`` /
        ``broken``; after a break the rest is not tried)."""
        if self.broken is not None:
            read.close()  # never started
            return None
        try:
            return await read
        except (CounterHintRefused, LinkClosed, ResponseTimeout) as exc:
            self.broken = exc  # nothing more can be sent on this link
        except RemoteProtocolError as exc:
            if exc.wire_code is not None and not exc.authenticated:
                # an unciphered refusal (a key the meter does not share, or a forgery): not
                # the meter's word on this object, and nothing says the next will fare better
                self.broken = exc
            else:  # the meter's authenticated refusal, or a bad answer: this request only
                self._skip(what, exc)
        except CodecError as exc:  # a value that does not decode: this request only
            self._skip(what, exc)
        except SacError as exc:  # the store (counters): stop here, keep what was read
            self.broken = exc
        return None

    def _skip(self, what: str, exc: SacError) -> None:
        self.skipped.append(f"{what}: {exc}")
        self.log.info("meter {ldn}: {what} not read: {e}", ldn=self.ldn, what=what, e=exc)

    # --- commands -----------------------------------------------------------------------

    async def run_commands(self, claimed: list[Command], deadline: float, clock: Any) -> Ingest:
        """Run claimed commands in order until ``deadline`` (reactor seconds): each one
        finished in the store as it ends; the ones not reached go back to the queue."""
        batches: list[Ingest] = []
        for i, command in enumerate(claimed):
            if clock.seconds() >= deadline:
                for rest in claimed[i:]:
                    await self.store.commands.retry(rest.id, "the session's time budget ran out")
                break
            try:
                outcome = await cmd.execute(self, command)
            except AccessError as exc:  # the meter's refusal, with what it means
                outcome = cmd.Outcome(False, f"{exc} ({exc.words})")
            except cmd.CommandError as exc:
                outcome = cmd.Outcome(False, str(exc))
            except RemoteProtocolError as exc:
                if exc.wire_code is None or not exc.authenticated:
                    # the stream broke, or an answer anyone on the path could have forged (an
                    # unciphered exception-response, a counter hint not followed): not the
                    # meter's word, so nothing fails for good on it; back to the queue with
                    # the attempt counted, and nothing more on this link
                    await self._requeue(claimed[i:], str(exc))
                    raise
                outcome = cmd.Outcome(False, str(exc))
            except SacError as exc:
                await self._requeue(claimed[i:], str(exc))
                raise
            batches.append(outcome.ingest)
            await record(self.store, self.ldn, command, outcome)
        return merge(batches)

    async def _requeue(self, commands: list[Command], why: str) -> None:
        await requeue(self.store, commands, why, attempts=self.settings.command_attempts)
