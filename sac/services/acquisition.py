"""Acquisition: a pushed DATA-NOTIFICATION from bytes to the store, or to the spool.

:meth:`Acquisition.push` takes the APDU of a meter's push as it came off the wire and

1. reads the ciphered envelope (general-glo-ciphering; an unciphered push is refused: its
   content is not authenticated);
2. finds the meter: by the system title, or, when the title is empty, by the source address
   its allowlist holds; checks it is active and that the address is allowed;
3. opens the APDU with the meter's key, the counter checked against the last one stored;
4. decodes the compact frame through the meter's profile;
5. stores the readings, the list values, the last connection and the meter's counter in
   one transaction (the counter is accepted there too: a frame is stored once or not at all).

A push that cannot be accepted raises :class:`PushRejected` with a short ``reason`` (the
metric's label).  When the store fails or is slower than ``store_timeout``, the raw APDU --
still ciphered, no key ever touches the disk -- goes to the durable spool, and the push
counts as received once the spool has it on disk.  :meth:`replay_spool` runs the spooled
pushes through the same steps, in order, when the store is back; one that was stored after
all (a slow write that ended) comes back as a replay and is dropped: no reading twice.

Writes of concurrent sessions are grouped: one transaction carries the pushes that arrived
while the previous one ran (a batch that fails is retried one push at a time, so one
replayed counter does not sink the others).
"""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sac.dlms import decode_apdu
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.security import GENERAL_GLO_CIPHERING, CipheredApdu, SecurityContext, Suite0Cipher
from sac.dlms.xdlms import DataNotification
from sac.errors import DecodeError, DecryptionError, ReplayError, SacError, SecurityError
from sac.profiles import IMeterProfile, ProfileRegistry
from sac.services.metrics import Metrics
from sac.services.readings import frame_readings
from sac.services.spool import SpoolError
from sac.store.interface import IStore
from sac.store.model import Ingest, IngestResult, Meter, MeterKeys, MeterState, PeerCounter

__all__ = ["Accepted", "Acquisition", "IngestWriter", "PushRejected", "StoreUnavailable"]


class PushRejected(SacError):
    """A push that is refused; ``reason`` is one word for metrics."""

    def __init__(self, reason: str, message: str, ldn: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.ldn = ldn


class StoreUnavailable(SacError):
    """The store failed or did not answer in time."""


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


@dataclass(slots=True)
class _Known:
    meter: Meter
    keys: MeterKeys
    until: float


# --- grouped writes -----------------------------------------------------------------------


class IngestWriter:
    """Group commit: ingests queued while a transaction runs go together in the next.

    Up to ``concurrency`` transactions run at once (the store's pool has the connections):
    while one waits for its commit, the next batch is already on its way.  Each takes its
    rows in one order (by meter), so two of them never deadlock."""

    log = Logger()

    def __init__(self, store: IStore, max_batch: int = 256, concurrency: int = 2) -> None:
        self.store = store
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queue: list[tuple[Ingest, Deferred[IngestResult]]] = []
        self._running = 0
        self.transactions = 0

    def write(self, batch: Ingest) -> Deferred[IngestResult]:
        d: Deferred[IngestResult] = Deferred()
        self._queue.append((batch, d))
        if self._running < self.concurrency:
            self._running += 1
            Deferred.fromCoroutine(self._drain())
        return d

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                group = [(b, d) for b, d in group if not d.called]  # timed out meanwhile
                if not group:
                    continue
                if len(group) == 1:
                    await self._one(*group[0])
                    continue
                merged = Ingest(
                    readings=[r for b, _ in group for r in b.readings],
                    events=[e for b, _ in group for e in b.events],
                    statuses=[s for b, _ in group for s in b.statuses],
                    counters=[c for b, _ in group for c in b.counters],
                )
                self.transactions += 1
                try:
                    result = await self.store.ingest(merged)
                except ReplayError:
                    for batch, d in group:  # find the stale one(s): each alone
                        await self._one(batch, d)
                    continue
                except Exception as exc:
                    for _, d in group:
                        if not d.called:
                            d.errback(exc)
                    continue
                share = IngestResult(result.readings, result.events, result.pending)
                for _, d in group:
                    if not d.called:
                        d.callback(share)
        finally:
            self._running -= 1

    async def _one(self, batch: Ingest, d: Deferred[IngestResult]) -> None:
        self.transactions += 1
        try:
            result = await self.store.ingest(batch)
        except Exception as exc:
            if not d.called:
                d.errback(exc)
            return
        if not d.called:
            d.callback(result)


# --- spool records ------------------------------------------------------------------------

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


# --- the intake ---------------------------------------------------------------------------


class Acquisition:
    log = Logger()

    def __init__(
        self,
        store: IStore,
        registry: ProfileRegistry,
        *,
        reactor: Any,
        metrics: Metrics | None = None,
        spool: Any = None,
        store_timeout: float = 5.0,
        system_title: bytes = b"SACSACSA",
        cache_seconds: float = 30.0,
        cache_size: int = 100_000,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.registry = registry
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else Metrics()
        self.spool = spool
        self.store_timeout = store_timeout
        self.system_title = system_title
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.now = now
        self.writer = IngestWriter(store)
        self._known: OrderedDict[bytes, _Known] = OrderedDict()
        self._replaying = False
        self._replay_loop: LoopingCall | None = None
        if spool is not None:
            self.metrics.gauge(
                "sac_spool_depth", lambda: spool.depth, "pushes on disk waiting for the store"
            )

    def start(self, replay_every: float = 2.0) -> None:
        """Replay the spool now and every ``replay_every`` seconds while it holds pushes."""
        if self.spool is None or self._replay_loop is not None:
            return
        self._replay_loop = LoopingCall(lambda: Deferred.fromCoroutine(self.replay_spool()))
        self._replay_loop.clock = self.reactor
        self._replay_loop.start(replay_every, now=True).addErrback(
            lambda f: self.log.failure("the spool replay stopped", f)
        )

    def stop(self) -> None:
        if self._replay_loop is not None and self._replay_loop.running:
            self._replay_loop.stop()
        self._replay_loop = None

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

    # --- identification

    async def _meter_of(self, title: bytes | None, peer: str) -> tuple[Meter, MeterKeys, bool]:
        """(meter, keys, from the cache)."""
        key = title or b"ip:" + peer.encode()
        known = self._known.get(key)
        if known is not None and known.until > time.monotonic():
            self._known.move_to_end(key)
            return known.meter, known.keys, True
        if title:
            meter = await self._store(
                "find the meter", lambda: self.store.meter_by_system_title(title)
            )
            if meter is None:
                raise PushRejected("unknown-meter", f"no meter has system title {title.hex()}")
        else:
            found = await self._store("find the meter", lambda: self.store.meters_by_ip(peer))
            found = [m for m in found if m.system_title is not None]
            if len(found) != 1:
                raise PushRejected(
                    "unknown-meter",
                    f"a push without system title from {peer}: "
                    + ("no meter allows this address" if not found else f"{len(found)} meters do"),
                )
            meter = found[0]
        profile = self._profile(meter)
        sap = int(profile.clients["management"])
        keys = await self._store("load the key", lambda: self.store.keys(meter.ldn, sap))
        if keys is None:
            raise PushRejected("no-key", f"meter {meter.ldn} has no key", meter.ldn)
        if self.cache_seconds > 0:
            self._known[key] = _Known(meter, keys, time.monotonic() + self.cache_seconds)
            if len(self._known) > self.cache_size:
                self._known.popitem(last=False)
        return meter, keys, False

    def forget(self, title: bytes | None = None) -> None:
        """Drop cached meters (one, or all): after a change of key, state or allowlist."""
        if title is None:
            self._known.clear()
        else:
            self._known.pop(title, None)

    def _profile(self, meter: Meter) -> IMeterProfile:
        try:
            return self.registry.match(assigned=meter.profile)
        except SacError:
            raise PushRejected(
                "no-profile",
                f"meter {meter.ldn} has profile {meter.profile!r}, not installed",
                meter.ldn,
            ) from None

    # --- one push

    async def push(
        self, apdu: bytes, peer: str, received: dt.datetime, *, spool: bool = True
    ) -> Accepted:
        try:
            result = await self._push(apdu, peer, received)
        except PushRejected as exc:
            self.metrics.count("sac_push_rejected_total", reason=exc.reason)
            raise
        except StoreUnavailable as exc:
            if not spool or self.spool is None:
                self.metrics.count("sac_push_store_failures_total")
                raise
            try:
                await self.spool.append(encode_record(apdu, peer, received))
            except SpoolError as full:  # full, or the disk failed: the meter will push again
                self.metrics.count("sac_push_store_failures_total")
                raise StoreUnavailable(f"{exc}; and the spool refused it: {full}") from None
            self.log.warn("push from {peer} spooled: {why}", peer=peer, why=exc)
            self.metrics.count("sac_push_spooled_total")
            return Accepted(spooled=True)
        self.metrics.count("sac_push_stored_total")
        self.metrics.count("sac_readings_stored_total", result.readings)
        return result

    async def _push(self, apdu: bytes, peer: str, received: dt.datetime) -> Accepted:
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
        title = envelope.system_title or None
        meter, keys, cached = await self._meter_of(title, peer)
        try:
            return await self._open(envelope, meter, keys, peer, received)
        except PushRejected as exc:
            if cached and exc.reason in ("bad-tag", "disabled", "ip-not-allowed"):
                self.forget(title or b"ip:" + peer.encode())  # maybe stale: ask the store once
                meter, keys, _ = await self._meter_of(title, peer)
                return await self._open(envelope, meter, keys, peer, received)
            raise

    async def _open(
        self,
        envelope: CipheredApdu,
        meter: Meter,
        keys: MeterKeys,
        peer: str,
        received: dt.datetime,
    ) -> Accepted:
        ldn = meter.ldn
        if meter.state is not MeterState.ACTIVE:
            raise PushRejected("disabled", f"meter {ldn} is disabled", ldn)
        if meter.allowed_ips and peer not in meter.allowed_ips:
            raise PushRejected("ip-not-allowed", f"meter {ldn} may not call from {peer}", ldn)
        profile = self._profile(meter)
        sap = int(profile.clients["management"])
        assert meter.system_title is not None
        security = SecurityContext(
            Suite0Cipher(keys.ek, keys.ak),
            self.system_title,
            peer_system_title=meter.system_title,
        )
        try:
            plain = security.unprotect(envelope)
        except DecryptionError:
            raise PushRejected(
                "bad-tag", f"meter {ldn}: the push does not authenticate", ldn
            ) from None
        except SecurityError as exc:
            raise PushRejected("security", f"meter {ldn}: {exc}", ldn) from None
        try:
            notification = decode_apdu(plain)
            if not isinstance(notification, DataNotification):
                raise DecodeError(f"a {type(notification).__name__}, not a DATA-NOTIFICATION")
            frame = decode_compact(compact_buffer_of(notification.body), profile.layouts)
        except DecodeError as exc:
            raise PushRejected("malformed", f"meter {ldn}: {exc}", ldn) from None
        readings, status = frame_readings(
            ldn, profile, frame, received=received, source=f"cf{frame.template_id}"
        )
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

        try:
            done = await self.spool.replay(handle)
        except StoreUnavailable:
            return 0
        finally:
            self._replaying = False
        if done:
            self.log.info("{n} spooled pushes replayed", n=done)
        return done
