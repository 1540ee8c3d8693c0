"""Acquisition: a pushed DATA-NOTIFICATION from bytes to the store, or to the spool.

:meth:`Acquisition.push` takes the APDU of a meter's push as it came off the wire and

1. reads the ciphered envelope (general-glo-ciphering; an unciphered push is refused: its
   content is not authenticated);
2. finds the meter: by the system title; checks it is active and that the address is
   allowed.  A push with an empty title is tried against the keys of the meters it may come
   from: those whose allowlist holds its source address, then those last heard from it (at
   most ``max_candidates``); the one whose key authenticates it is the meter;
3. opens the APDU with the meter's key, the counter checked against the last one stored;
4. decodes the compact frame through the meter's profile;
5. stores the readings, the list values, the last connection and the meter's counter in
   one transaction (the counter is accepted there too: a frame is stored once or not at all).

A push that cannot be accepted raises :class:`PushRejected` with a short ``reason`` (the
metric's label).  When the store fails or is slower than ``store_timeout``, the raw APDU --
still ciphered, no key ever touches the disk -- goes to the durable spool, and the push
counts as received once the spool has it on disk -- only for a meter this process knows
(an active meter of the store when it started, or one it has identified from the store
since, its entry not withdrawn by a change of the meter: the store cannot be asked then),
and at most ``spool_per_address`` pushes from one source address at a time.
:meth:`replay_spool` runs the spooled pushes through the same steps, in order, when the
store is back; one that was stored after all (a slow write that ended) comes back as a
replay and is dropped: no reading twice.

Finding the meter (step 2), with its cache, is :class:`~sac.services.directory.
MeterDirectory`'s; the writes of concurrent sessions are grouped by :class:`~sac.services.
ingest.IngestWriter` (one transaction carries the pushes that arrived while the previous one
ran; a batch that fails is retried one push at a time, so one replayed counter does not sink
the others).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sac.dlms import decode_apdu
from sac.dlms.compact import CompactFrame, compact_buffer_of, decode_compact
from sac.dlms.security import GENERAL_GLO_CIPHERING, CipheredApdu, SecurityContext, Suite0Cipher
from sac.dlms.xdlms import DataNotification
from sac.errors import (
    DecodeError,
    DecryptionError,
    ReplayError,
    SecurityError,
    StoreUnavailable,
)
from sac.profiles import IMeterProfile, ProfileRegistry
from sac.services.directory import DirectoryStore, MeterDirectory, PushRejected
from sac.services.ingest import IngestStore, IngestWriter
from sac.services.metrics import Metrics
from sac.services.plan import carried
from sac.services.readings import frame_readings
from sac.services.spool import SpoolError
from sac.store.model import Ingest, Meter, MeterKeys, MeterState, PeerCounter, PlanMark

__all__ = [
    "Accepted",
    "Acquisition",
    "AcquisitionStore",
    "IngestWriter",
    "PushRejected",
    "StoreUnavailable",
]


class AcquisitionStore(DirectoryStore, IngestStore, Protocol):
    """The parts of the store a push reaches: the meters (found by system title or
    address) and their keys, word of changes to them, and the readings."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A push stored (``spooled`` False) or on disk in the spool (``spooled`` True; nothing
    else is known then)."""

    spooled: bool
    meter: Meter | None = None
    profile: IMeterProfile | None = None
    frame_counter: int | None = None  # the Management client's FC, when the frame has it
    readings: int = 0
    invocation_counter: int | None = None
    commands_waiting: bool = False  # pending commands for the meter, seen when it was stored
    # where the meter stands on its read plan (in the push's transaction), and what its
    # frame carried of the plan's objects and counters, by quantity (sac.services.plan)
    marks: tuple[PlanMark, ...] = ()
    carried: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# --- spool records ------------------------------------------------------------------------


def _spool_key(envelope: CipheredApdu, peer: str) -> bytes:
    """Whose pushes keep their order on the spool: the meter's title, else its address."""
    return envelope.system_title or b"ip:" + peer.encode()


def _less(counts: Counter[Any], key: Any) -> None:
    left = counts[key] - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class _OnSpool:
    """What waits on the spool: pushes by source address (so many an address at most), and
    by meter (title, else address: :func:`_spool_key`): a newer push of one of them is
    spooled after it, not stored before it.  The ``before`` records left by the process
    before are not counted: while they last, every push is spooled."""

    def __init__(self, before: int) -> None:
        self.by_peer: Counter[str] = Counter()
        self.by_meter: Counter[bytes] = Counter()
        self.before = before

    def waits(self, key: bytes) -> bool:
        """Whether pushes of this meter may wait on the spool: counted since the start, or
        any while records of before are left (their meters are not known until read)."""
        return key in self.by_meter or self.before > 0

    def added(self, peer: str, key: bytes) -> None:
        self.by_peer[peer] += 1
        self.by_meter[key] += 1

    def replayed(self, peer: str, key: bytes | None) -> None:
        """One record handled (``key``: its meter's, None if it does not decode)."""
        if self.before > 0:  # the records of before come first
            self.before -= 1
            return
        _less(self.by_peer, peer)
        if key is not None:
            _less(self.by_meter, key)

    def clear(self) -> None:
        """Nothing waits (whatever the counts say)."""
        self.by_peer.clear()
        self.by_meter.clear()
        self.before = 0


_RECORD = struct.Struct(">BdB")  # version, received (UNIX seconds), address length
_VERSION = 1


def encode_record(apdu: bytes, peer: str, received: dt.datetime) -> bytes:
    address = peer.encode()
    return _RECORD.pack(_VERSION, received.timestamp(), len(address)) + address + apdu


def decode_record(record: bytes) -> tuple[bytes, str, dt.datetime]:
    version, stamp, size = _RECORD.unpack_from(record)
    if version != _VERSION:
        raise DecodeError(f"spool record version {version}")
    start = _RECORD.size
    peer = record[start : start + size].decode()
    return record[start + size :], peer, dt.datetime.fromtimestamp(stamp, dt.UTC)


def _frame(plain: bytes, profile: IMeterProfile, ldn: str) -> CompactFrame:
    """The compact frame of an opened push, decoded through the meter's profile."""
    try:
        notification = decode_apdu(plain)
        if not isinstance(notification, DataNotification):
            raise DecodeError(f"a {type(notification).__name__}, not a DATA-NOTIFICATION")
        return decode_compact(compact_buffer_of(notification.body), profile.layouts)
    except DecodeError as exc:
        raise PushRejected("malformed", f"meter {ldn}: {exc}", ldn) from None


# --- the intake ---------------------------------------------------------------------------


class Acquisition:
    log = Logger()

    def __init__(
        self,
        store: AcquisitionStore,
        registry: ProfileRegistry,
        *,
        reactor: Any,
        metrics: Metrics | None = None,
        spool: Any = None,
        store_timeout: float = 5.0,
        system_title: bytes = b"SACSACSA",
        cache_seconds: float = 30.0,
        cache_size: int = 100_000,
        max_candidates: int = 8,
        spool_per_address: int = 1000,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else Metrics()
        self.spool = spool
        self.store_timeout = store_timeout
        self.system_title = system_title
        self.now = now
        self.spool_per_address = spool_per_address
        self.writer = IngestWriter(store)
        self.directory = MeterDirectory(
            store,
            registry,
            self._store,
            cache_seconds=cache_seconds,
            cache_size=cache_size,
            max_candidates=max_candidates,
        )
        self._on_spool = _OnSpool(spool.depth if spool is not None else 0)
        self.loaded: Deferred[int] | None = None
        self._replaying = False
        self._replay_loop: LoopingCall | None = None
        self.replay_problem: str | None = None  # why the last replay failed (/health says)
        self._replay_waiting: str | None = None  # the store error the replay waits out
        if spool is not None:
            self.metrics.gauge("sac_spool_depth", lambda: spool.depth)

    def start(self, replay_every: float = 2.0) -> None:
        """Learn the store's meters (``loaded`` fires with how many), and replay the spool
        now and every ``replay_every`` seconds while it holds pushes."""
        if self.spool is None or self._replay_loop is not None:
            return
        self.loaded = Deferred.fromCoroutine(self.directory.load())
        self._replay_loop = LoopingCall(lambda: Deferred.fromCoroutine(self.replay_spool()))
        self._replay_loop.clock = self.reactor
        self._replay_loop.start(replay_every, now=True).addErrback(
            lambda f: self.log.failure("the spool replay stopped", f)
        )

    def stop(self) -> None:
        if self._replay_loop is not None and self._replay_loop.running:
            self._replay_loop.stop()
        self._replay_loop = None
        self.directory.stop()

    # --- the store, with a deadline

    async def _store(self, what: str, call: Callable[[], Any]) -> Any:
        started = call()
        d = started if isinstance(started, Deferred) else Deferred.fromCoroutine(started)
        d.addTimeout(self.store_timeout, self.reactor)
        try:
            return await d
        except (ReplayError, PushRejected):
            raise
        except (CancelledError, DeferTimeout):
            raise StoreUnavailable(
                f"the store did not {what} within {self.store_timeout:g} s"
            ) from None
        except Exception as exc:
            raise StoreUnavailable(f"the store could not {what}: {exc}") from None

    # --- one push

    async def push(
        self, apdu: bytes, peer: str, received: dt.datetime, *, spool: bool = True
    ) -> Accepted:
        try:
            envelope = self._envelope(apdu)
            waiting = _spool_key(envelope, peer)
            if spool and self.spool is not None and self._on_spool.waits(waiting):
                # an older push of this meter waits on the spool: this one goes after it,
                # else its counter, stored first, would make the older one a replay
                raise StoreUnavailable("an older push of this meter waits on the spool")
            result = await self._push(envelope, peer, received)
        except PushRejected as exc:
            self.metrics.count("sac_push_rejected_total", reason=exc.reason)
            raise
        except StoreUnavailable as exc:
            if not spool or self.spool is None:
                self.metrics.count("sac_push_store_failures_total")
                raise
            refused = self._not_spooled(envelope, peer, exc)
            if refused is not None:
                self.metrics.count("sac_push_rejected_total", reason=refused.reason)
                raise refused from None
            try:
                await self.spool.append(encode_record(apdu, peer, received))
            except SpoolError as full:  # full, or the disk failed: the meter will push again
                self.metrics.count("sac_push_store_failures_total")
                raise StoreUnavailable(f"{exc}; and the spool refused it: {full}") from None
            self._on_spool.added(peer, waiting)
            self.log.warn("push from {peer} spooled: {why}", peer=peer, why=exc)
            self.metrics.count("sac_push_spooled_total")
            return Accepted(spooled=True)
        self.metrics.count("sac_push_stored_total")
        self.metrics.count("sac_readings_stored_total", result.readings)
        return result

    def _not_spooled(
        self, envelope: CipheredApdu, peer: str, why: StoreUnavailable
    ) -> PushRejected | None:
        """Why a push the store could not take may not go to the spool (None: it may):
        the spool acknowledges it, so only a meter this process knows, and only so many
        from one address (the push has not been authenticated: the store has its key)."""
        title = envelope.system_title or None
        if not self.directory.known(title, peer):
            who = f"system title {title.hex()}" if title else f"a push without title from {peer}"
            return PushRejected("not-spooled", f"{why}; {who}: no meter this process knows")
        held = self._on_spool.by_peer[peer]
        if self.spool_per_address and held >= self.spool_per_address:
            return PushRejected(
                "not-spooled", f"{why}; {held} pushes from {peer} on the spool already"
            )
        return None

    @staticmethod
    def _envelope(apdu: bytes) -> CipheredApdu:
        try:
            envelope = decode_apdu(apdu)
        except DecodeError as exc:
            raise PushRejected("malformed", f"a push that does not decode: {exc}") from None
        if isinstance(envelope, DataNotification):
            raise PushRejected("unciphered", "an unciphered push: its content is not authenticated")
        if not isinstance(envelope, CipheredApdu) or envelope.tag != GENERAL_GLO_CIPHERING:
            raise PushRejected(
                "malformed", f"a {type(envelope).__name__} where a push was expected"
            )
        return envelope

    async def _push(self, envelope: CipheredApdu, peer: str, received: dt.datetime) -> Accepted:
        title = envelope.system_title or None
        if title is None:
            return await self._push_untitled(envelope, peer, received)
        meter, keys, cached = await self.directory.meter_of(title, peer)
        try:
            return await self._open(envelope, meter, keys, peer, received)
        except PushRejected as exc:
            if cached and exc.reason in ("bad-tag", "disabled", "ip-not-allowed"):
                self.directory.forget(title)  # maybe stale: ask the store once
                meter, keys, _ = await self.directory.meter_of(title, peer)
                return await self._open(envelope, meter, keys, peer, received)
            raise

    async def _push_untitled(
        self, envelope: CipheredApdu, peer: str, received: dt.datetime
    ) -> Accepted:
        found, cached = await self.directory.candidates_of(peer)
        try:
            return await self._open_untitled(envelope, found, peer, received)
        except PushRejected as exc:
            if cached and exc.reason in ("bad-tag", "unidentified", "disabled"):
                self.directory.forget_address(peer)  # maybe stale: ask the store once
                found, _ = await self.directory.candidates_of(peer)
                return await self._open_untitled(envelope, found, peer, received)
            raise

    async def _open_untitled(
        self,
        envelope: CipheredApdu,
        found: list[tuple[Meter, MeterKeys]],
        peer: str,
        received: dt.datetime,
    ) -> Accepted:
        """The candidate whose key authenticates the push is its meter.  When none does, a
        refusal names the meter only if it was the one candidate."""
        for meter, keys in found:
            try:
                plain = self._unprotect(envelope, meter, keys)
            except PushRejected:
                continue
            self._admit(meter, peer)
            return await self._accept(envelope, plain, meter, received, peer)
        if len(found) == 1:
            ldn = found[0][0].ldn
            raise PushRejected("bad-tag", f"meter {ldn}: the push does not authenticate", ldn)
        raise PushRejected(
            "unidentified",
            f"a push without system title from {peer}: it authenticates as none of the"
            f" {len(found)} meters that may call from there",
        )

    async def _open(
        self,
        envelope: CipheredApdu,
        meter: Meter,
        keys: MeterKeys,
        peer: str,
        received: dt.datetime,
    ) -> Accepted:
        self._admit(meter, peer)
        plain = self._unprotect(envelope, meter, keys)
        return await self._accept(envelope, plain, meter, received, peer)

    def _admit(self, meter: Meter, peer: str) -> None:
        ldn = meter.ldn
        if meter.state is not MeterState.ACTIVE:
            raise PushRejected("disabled", f"meter {ldn} is disabled", ldn)
        if meter.allowed_ips and peer not in meter.allowed_ips:
            raise PushRejected("ip-not-allowed", f"meter {ldn} may not call from {peer}", ldn)

    def _unprotect(self, envelope: CipheredApdu, meter: Meter, keys: MeterKeys) -> bytes:
        ldn = meter.ldn
        assert meter.system_title is not None
        security = SecurityContext(
            Suite0Cipher(keys.ek, keys.ak),
            self.system_title,
            peer_system_title=meter.system_title,
        )
        try:
            return security.unprotect(envelope)
        except DecryptionError:
            raise PushRejected(
                "bad-tag", f"meter {ldn}: the push does not authenticate", ldn
            ) from None
        except SecurityError as exc:
            raise PushRejected("security", f"meter {ldn}: {exc}", ldn) from None

    async def _accept(
        self,
        envelope: CipheredApdu,
        plain: bytes,
        meter: Meter,
        received: dt.datetime,
        peer: str,
    ) -> Accepted:
        """An authenticated push: decoded through the meter's profile and stored."""
        ldn = meter.ldn
        profile = self.directory.profile(meter)
        sap = int(profile.clients["management"])
        frame = _frame(plain, profile, ldn)
        readings, status = frame_readings(
            ldn, profile, frame, received=received, source=f"cf{frame.template_id}"
        )
        status = dataclasses.replace(status, address=peer)  # whence it was last heard
        counter = envelope.invocation_counter
        batch = Ingest(
            readings=readings, statuses=[status], counters=[PeerCounter(ldn, sap, counter)]
        )
        try:
            stored = await self._store("store the push", lambda: self.writer.write(batch))
        except ReplayError as exc:
            raise PushRejected("replay", f"meter {ldn}: {exc}", ldn) from None
        fc = frame.values.get("management_frame_counter")
        return Accepted(
            False,
            meter,
            profile,
            int(fc) if fc is not None else None,
            len(readings),
            counter,
            ldn in stored.pending,
            stored.plans.get(ldn, ()),
            carried(profile, frame.template_id, frame.values),
        )

    # --- the spool

    async def replay_spool(self) -> int:
        """Run the spooled pushes through the store, oldest first; how many were handled.
        Stops at the first store failure (the rest wait for the next call)."""
        if self.spool is None or self._replaying or not self.spool.depth:
            return 0
        self._replaying = True

        async def handle(record: bytes) -> None:
            apdu, peer, received = decode_record(record)
            try:
                await self.push(apdu, peer, received, spool=False)
            except PushRejected as exc:
                self.log.warn("spooled push from {peer} dropped: {e}", peer=peer, e=exc)
            key = None
            with contextlib.suppress(PushRejected):  # (it decoded when it was spooled)
                key = _spool_key(self._envelope(apdu), peer)
            self._on_spool.replayed(peer, key)

        try:
            done = await self.spool.replay(handle)
        except StoreUnavailable as exc:  # the store is slow or away: tried again next time
            if str(exc) != self._replay_waiting:
                self.log.warn("spool replay waits for the store: {e}", e=exc)
            self._replay_waiting = str(exc)
            return 0
        except Exception as exc:  # the disk, or any store error: said, tried again next time
            # (never raised: the replay loop must outlive any one failure)
            if str(exc) != self.replay_problem:
                self.log.error("spool replay failed: {e!r}", e=exc)
            self.replay_problem = str(exc) or repr(exc)
            return 0
        finally:
            self._replaying = False
        self._replay_waiting = None
        self.replay_problem = None
        if not self.spool.depth:  # nothing waits: whatever the counts say
            self._on_spool.clear()
        if done:
            self.log.info("{n} spooled pushes replayed", n=done)
        return done
