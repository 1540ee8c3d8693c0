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

Meters and keys are cached for ``cache_seconds``; a change of a meter or of its keys made
through the store (pages, JSON API, CSV import, ``sac-admin``) withdraws its entry at once
in this process and, on PostgreSQL, within moments in the others (``IStore.watch_meters``).

Writes of concurrent sessions are grouped: one transaction carries the pushes that arrived
while the previous one ran (a batch that fails is retried one push at a time, so one
replayed counter does not sink the others).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import struct
import time
from collections import Counter, OrderedDict
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
from sac.errors import (
    DecodeError,
    DecryptionError,
    ReplayError,
    SacError,
    SecurityError,
    StoreUnavailable,
)
from sac.profiles import IMeterProfile, ProfileRegistry
from sac.services.metrics import Metrics
from sac.services.readings import frame_readings
from sac.services.spool import SpoolError
from sac.store.connector import IStore
from sac.store.model import Ingest, IngestResult, Meter, MeterKeys, MeterState, PeerCounter

__all__ = ["Accepted", "Acquisition", "IngestWriter", "PushRejected", "StoreUnavailable"]


class PushRejected(SacError):
    """A push that is refused; ``reason`` is one word for metrics."""

    def __init__(self, reason: str, message: str, ldn: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.ldn = ldn


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


@dataclass(slots=True)
class _Candidates:
    """The meters a push without system title from one address may come from."""

    found: list[tuple[Meter, MeterKeys]]
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
                    result = await self.store.readings.ingest(merged)
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
            result = await self.store.readings.ingest(batch)
        except Exception as exc:
            if not d.called:
                d.errback(exc)
            return
        if not d.called:
            d.callback(result)


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
        max_candidates: int = 8,
        spool_per_address: int = 1000,
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
        self.max_candidates = max_candidates
        self.spool_per_address = spool_per_address
        self.writer = IngestWriter(store)
        # meters and keys by system title, for cache_seconds
        self._known: OrderedDict[bytes, _Known] = OrderedDict()
        # the candidates of pushes without system title, by source address
        self._by_ip: OrderedDict[str, _Candidates] = OrderedDict()
        # every meter identified from the store since the start, {system title: LDN}, until
        # a change of it is announced; with the addresses pushes without title came from:
        # what a push must be of to be spooled while the store is away
        self._seen: OrderedDict[bytes, str] = OrderedDict()
        self._title_of: dict[str, bytes] = {}
        self._seen_ips: OrderedDict[str, None] = OrderedDict()
        self._spooled: Counter[str] = Counter()  # pushes on the spool by source address
        # ... and by meter (title, else address): a newer push of one of them is spooled
        # after it, not stored before it; records left by the process before are not counted,
        # so while they last every push is spooled
        self._on_spool: Counter[bytes] = Counter()
        self._from_before = spool.depth if spool is not None else 0
        self._changes = 0  # changes heard of
        self._unwatch = store.watch_meters(self._changed)
        self.loaded: Deferred[int] | None = None
        self._replaying = False
        self._replay_loop: LoopingCall | None = None
        self.replay_problem: str | None = None  # why the last replay failed (the disk)
        if spool is not None:
            self.metrics.gauge("sac_spool_depth", lambda: spool.depth)

    def start(self, replay_every: float = 2.0) -> None:
        """Learn the store's meters (``loaded`` fires with how many), and replay the spool
        now and every ``replay_every`` seconds while it holds pushes."""
        if self.spool is None or self._replay_loop is not None:
            return
        self.loaded = Deferred.fromCoroutine(self._load_known())
        self._replay_loop = LoopingCall(lambda: Deferred.fromCoroutine(self.replay_spool()))
        self._replay_loop.clock = self.reactor
        self._replay_loop.start(replay_every, now=True).addErrback(
            lambda f: self.log.failure("the spool replay stopped", f)
        )

    def stop(self) -> None:
        if self._replay_loop is not None and self._replay_loop.running:
            self._replay_loop.stop()
        self._replay_loop = None
        self._unwatch()

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

    async def _meter_of(self, title: bytes, peer: str) -> tuple[Meter, MeterKeys, bool]:
        """(meter, keys, from the cache)."""
        known = self._known.get(title)
        if known is not None and known.until > time.monotonic():
            self._known.move_to_end(title)
            return known.meter, known.keys, True
        changes = self._changes
        meter = await self._store(
            "find the meter", lambda: self.store.meters.by_system_title(title)
        )
        if meter is None:
            raise PushRejected("unknown-meter", f"no meter has system title {title.hex()}")
        keys = await self._keys_of(meter)
        if keys is None:
            raise PushRejected("no-key", f"meter {meter.ldn} has no key", meter.ldn)
        self._learn(meter)
        if self.cache_seconds > 0 and changes == self._changes:  # (else maybe read before)
            self._known[title] = _Known(meter, keys, time.monotonic() + self.cache_seconds)
            if len(self._known) > self.cache_size:
                self._known.popitem(last=False)
        return meter, keys, False

    async def _keys_of(self, meter: Meter) -> MeterKeys | None:
        profile = self._profile(meter)
        sap = int(profile.clients["management"])
        return await self._store("load the key", lambda: self.store.keys.get(meter.ldn, sap))

    async def _candidates_of(self, peer: str) -> tuple[list[tuple[Meter, MeterKeys]], bool]:
        """The meters (with their keys) a push without system title from ``peer`` may come
        from; (them, from the cache)."""
        cached = self._by_ip.get(peer)
        if cached is not None and cached.until > time.monotonic():
            self._by_ip.move_to_end(peer)
            return cached.found, True
        changes = self._changes
        meters = await self._store(
            "find the meter", lambda: self.store.meters.push_candidates(peer, self.max_candidates)
        )
        found = []
        for meter in meters:
            try:
                keys = await self._keys_of(meter)
            except PushRejected:  # its profile is not installed: not this one
                continue
            if keys is not None:
                found.append((meter, keys))
        if not found:
            raise PushRejected(
                "unknown-meter",
                f"a push without system title from {peer}: no meter (with a key) may call"
                " from this address",
            )
        for meter, _ in found:
            self._learn(meter)
        self._seen_ips[peer] = None
        self._seen_ips.move_to_end(peer)
        if len(self._seen_ips) > self.cache_size:
            self._seen_ips.popitem(last=False)
        if self.cache_seconds > 0 and changes == self._changes:
            self._by_ip[peer] = _Candidates(found, time.monotonic() + self.cache_seconds)
            if len(self._by_ip) > self.cache_size:
                self._by_ip.popitem(last=False)
        return found, False

    async def _load_known(self) -> int:
        """The active meters of the store (up to ``cache_size``, the latest heard first),
        known from the start: the store answers at the start (the SAC does not start
        without it), so a push of any of them may be spooled if it goes away later."""
        try:
            found = await self.store.meters.known(self.cache_size)
        except SacError as exc:
            self.log.warn("meters not loaded for the spool: {e}", e=exc)
            return 0
        for ldn, title, allowed in reversed(found):  # the latest heard evicted last
            if ldn not in self._title_of:  # (changed since: learnt anew, or withdrawn)
                self._learn_title(ldn, title)
            for ip in allowed:
                self._seen_ips[ip] = None
        while len(self._seen_ips) > self.cache_size:
            self._seen_ips.popitem(last=False)
        return len(found)

    def _learn(self, meter: Meter) -> None:
        """A meter found in the store: known to this process (its pushes may be spooled)."""
        if meter.system_title is not None:
            self._learn_title(meter.ldn, meter.system_title)

    def _learn_title(self, ldn: str, title: bytes) -> None:
        old = self._title_of.get(ldn)
        if old is not None and old != title:
            self._seen.pop(old, None)
        self._seen[title] = ldn
        self._seen.move_to_end(title)
        self._title_of[ldn] = title
        if len(self._seen) > self.cache_size:
            dropped, gone = self._seen.popitem(last=False)
            self._title_of.pop(gone, None)
            self._known.pop(dropped, None)

    def _changed(self, ldns: frozenset[str] | None) -> None:
        """Meters changed (their row or keys; None: any of them may have): their cache
        entries go, at once.  On an unknown change (None: another process's change may have
        been missed) every entry goes, but the meters stay known for the spool (the store
        cannot be asked then); a change of one meter withdraws that too: it may be a
        deletion, a new title, a disabling."""
        self._changes += 1  # a lookup in flight meanwhile may have read the meter before
        self._by_ip.clear()  # a candidate list may have gained or lost a meter
        if ldns is None:
            self._known.clear()
            return
        for ldn in ldns:
            title = self._title_of.pop(ldn, None)
            if title is not None:
                self._known.pop(title, None)
                self._seen.pop(title, None)

    def forget(self, title: bytes | None = None) -> None:
        """Drop cached meters (one, or all)."""
        if title is None:
            self._known.clear()
            self._by_ip.clear()
        else:
            self._known.pop(title, None)

    def known(self, title: bytes | None, peer: str) -> bool:
        """Whether a push with this system title (or, without one, from this address) is of
        a meter this process has identified from the store, and not since seen changed."""
        return title in self._seen if title else peer in self._seen_ips

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
            envelope = self._envelope(apdu)
            waiting = _spool_key(envelope, peer)
            if spool and self.spool is not None and self._waits_on_spool(waiting):
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
            self._spooled[peer] += 1
            self._on_spool[waiting] += 1
            self.log.warn("push from {peer} spooled: {why}", peer=peer, why=exc)
            self.metrics.count("sac_push_spooled_total")
            return Accepted(spooled=True)
        self.metrics.count("sac_push_stored_total")
        self.metrics.count("sac_readings_stored_total", result.readings)
        return result

    def _waits_on_spool(self, key: bytes) -> bool:
        """Whether pushes of this meter (by title, or by address without one) may wait on
        the spool: counted since the start, or any while records of before are left (their
        meters are not known until they are read)."""
        return key in self._on_spool or self._from_before > 0

    def _not_spooled(
        self, envelope: CipheredApdu, peer: str, why: StoreUnavailable
    ) -> PushRejected | None:
        """Why a push the store could not take may not go to the spool (None: it may):
        the spool acknowledges it, so only a meter this process knows, and only so many
        from one address (the push has not been authenticated: the store has its key)."""
        title = envelope.system_title or None
        if not self.known(title, peer):
            who = f"system title {title.hex()}" if title else f"a push without title from {peer}"
            return PushRejected("not-spooled", f"{why}; {who}: no meter this process knows")
        held = self._spooled[peer]
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
        meter, keys, cached = await self._meter_of(title, peer)
        try:
            return await self._open(envelope, meter, keys, peer, received)
        except PushRejected as exc:
            if cached and exc.reason in ("bad-tag", "disabled", "ip-not-allowed"):
                self.forget(title)  # maybe stale: ask the store once
                meter, keys, _ = await self._meter_of(title, peer)
                return await self._open(envelope, meter, keys, peer, received)
            raise

    async def _push_untitled(
        self, envelope: CipheredApdu, peer: str, received: dt.datetime
    ) -> Accepted:
        found, cached = await self._candidates_of(peer)
        try:
            return await self._open_untitled(envelope, found, peer, received)
        except PushRejected as exc:
            if cached and exc.reason in ("bad-tag", "unidentified", "disabled"):
                self._by_ip.pop(peer, None)  # maybe stale: ask the store once
                found, _ = await self._candidates_of(peer)
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
        profile = self._profile(meter)
        sap = int(profile.clients["management"])
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
            if self._from_before > 0:  # the records of before come first
                self._from_before -= 1
                return
            _less(self._spooled, peer)
            with contextlib.suppress(PushRejected):  # (it decoded when it was spooled)
                _less(self._on_spool, _spool_key(self._envelope(apdu), peer))

        try:
            done = await self.spool.replay(handle)
        except StoreUnavailable:
            return 0
        except SpoolError as exc:  # the disk: said (log, /health), tried again next time
            if str(exc) != self.replay_problem:
                self.log.error("spool replay failed: {e}", e=exc)
            self.replay_problem = str(exc)
            return 0
        finally:
            self._replaying = False
        self.replay_problem = None
        if not self.spool.depth:  # nothing waits: whatever the counts say
            self._on_spool.clear()
            self._spooled.clear()
            self._from_before = 0
        if done:
            self.log.info("{n} spooled pushes replayed", n=done)
        return done
