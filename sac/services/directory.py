"""Which meter a push is of, for the acquisition (:mod:`sac.services.acquisition`).

A push names its meter by system title; one with an empty title is tried against the keys
of the meters it may come from: those whose allowlist holds its source address, then those
last heard from it (at most ``max_candidates``).  Meters and keys are cached for
``cache_seconds``; a change of a meter or of its keys made through the store withdraws its
entry at once in this process and, on PostgreSQL, within moments in the others
(``Store.watch_meters``).

The directory also knows which meters this process has identified from the store (or
loaded at the start): only their pushes may go to the spool while the store is away.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sac.errors import SacError
from sac.profiles import IMeterProfile, ProfileRegistry
from sac.services.ingest import Grouped
from sac.store.model import Meter, MeterKeys

if TYPE_CHECKING:
    from sac.store.keys import IKeys
    from sac.store.meters import IMeters, PushKeys

__all__ = ["DirectoryStore", "MeterDirectory", "PushRejected"]

#: a call to the store with a deadline: (what it does, for the error; the call)
Ask = Callable[[str, Callable[[], Any]], Awaitable[Any]]


class PushRejected(SacError):
    """A push that is refused; ``reason`` is one word for metrics."""

    def __init__(self, reason: str, message: str, ldn: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.ldn = ldn


class DirectoryStore(Protocol):
    """The parts of the store the directory reads: the meters and their keys, and word of
    changes to them."""

    @property
    def meters(self) -> IMeters: ...

    @property
    def keys(self) -> IKeys: ...

    def watch_meters(
        self, watcher: Callable[[frozenset[str] | None], None]
    ) -> Callable[[], None]: ...


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


#: a meter found for a push, with its keys by client (None: no meter has the title)
_Found = tuple[Meter, "PushKeys"] | None


class _Lookups(Grouped[bytes, _Found]):
    """The meters (and keys) of the pushes not in the cache, looked up together: those
    asked for while a lookup runs go in the next one, one statement for all (the keys of
    every installed profile's Management client)."""

    def __init__(self, directory: MeterDirectory) -> None:
        super().__init__(max_batch=500, concurrency=2)
        self.directory = directory
        registry = directory.registry
        self.client_saps = sorted(
            {int(p.clients["management"]) for p in registry.profiles.values()}
        )

    async def run_group(self, group: list[tuple[bytes, Deferred[_Found]]]) -> None:
        store = self.directory.store
        titles = [title for title, _ in group]
        found = await self.directory.ask(
            "find the meter", lambda: store.meters.for_pushes(titles, self.client_saps)
        )
        for title, d in group:
            if not d.called:
                d.callback(found.get(title))


class MeterDirectory:
    """The meters pushes come from: found in the store (through ``ask``, the acquisition's
    call with a deadline), cached, and known to this process."""

    log = Logger()

    def __init__(
        self,
        store: DirectoryStore,
        registry: ProfileRegistry,
        ask: Ask,
        *,
        cache_seconds: float = 30.0,
        cache_size: int = 100_000,
        max_candidates: int = 8,
    ) -> None:
        self.store = store
        self.registry = registry
        self.ask = ask
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.max_candidates = max_candidates
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
        self._changes = 0  # changes heard of
        self._unwatch = store.watch_meters(self._changed)
        self.lookups = _Lookups(self)  # (its ``groups``: the lookups run)

    def stop(self) -> None:
        self._unwatch()

    async def meter_of(self, title: bytes, peer: str) -> tuple[Meter, MeterKeys, bool]:
        """(meter, keys, from the cache).  Not in the cache (the usual case: a meter pushes
        once a day), it is looked up with the other sessions' meters not in the cache: one
        statement for all the pushes that came in while the previous lookup ran."""
        known = self._known.get(title)
        if known is not None and known.until > time.monotonic():
            self._known.move_to_end(title)
            return known.meter, known.keys, True
        changes = self._changes
        found = await self.ask("find the meter", lambda: self.lookups(title))
        if found is None:
            raise PushRejected("unknown-meter", f"no meter has system title {title.hex()}")
        meter, by_sap = found
        keys = by_sap.get(int(self.profile(meter).clients["management"]))
        if keys is None:
            raise PushRejected("no-key", f"meter {meter.ldn} has no key", meter.ldn)
        if not isinstance(keys, MeterKeys):  # damaged, or wrapped under another master key
            raise PushRejected("bad-key", f"meter {meter.ldn}: its key: {keys}", meter.ldn)
        self._learn(meter)
        if self.cache_seconds > 0 and changes == self._changes:  # (else maybe read before)
            self._known[title] = _Known(meter, keys, time.monotonic() + self.cache_seconds)
            if len(self._known) > self.cache_size:
                self._known.popitem(last=False)
        return meter, keys, False

    async def _keys_of(self, meter: Meter) -> MeterKeys | None:
        profile = self.profile(meter)
        sap = int(profile.clients["management"])
        return await self.ask("load the key", lambda: self.store.keys.get(meter.ldn, sap))

    async def candidates_of(self, peer: str) -> tuple[list[tuple[Meter, MeterKeys]], bool]:
        """The meters (with their keys) a push without system title from ``peer`` may come
        from; (them, from the cache)."""
        cached = self._by_ip.get(peer)
        if cached is not None and cached.until > time.monotonic():
            self._by_ip.move_to_end(peer)
            return cached.found, True
        changes = self._changes
        meters = await self.ask(
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

    async def load(self) -> int:
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

    def forget_address(self, peer: str) -> None:
        """Drop the cached candidates of pushes without system title from ``peer``."""
        self._by_ip.pop(peer, None)

    def known(self, title: bytes | None, peer: str) -> bool:
        """Whether a push with this system title (or, without one, from this address) is of
        a meter this process has identified from the store, and not since seen changed."""
        return title in self._seen if title else peer in self._seen_ips

    def profile(self, meter: Meter) -> IMeterProfile:
        try:
            return self.registry.match(assigned=meter.profile)
        except SacError:
            raise PushRejected(
                "no-profile",
                f"meter {meter.ldn} has profile {meter.profile!r}, not installed",
                meter.ldn,
            ) from None
