"""The push listener: meters call in, push a ciphered DATA-NOTIFICATION, and answer our
requests on the same connection (docs/uni-ts-11291.md §5;
docs/architecture.md, "A meter calls in").

One :class:`PushProtocol` a connection:

1. frames wrapper PDUs (the PDU size bounded by the header, before any body is read);
2. hands the first push to :class:`~sac.services.acquisition.Acquisition`, which stores it
   (or spools it) before anything else happens;
3. if commands wait for that meter: identifies the Management counter (from the frame, else a
   Public association), runs them through the Management association within the session
   budget, stores what they read, and closes the connection cleanly;
4. otherwise closes at once -- the clean close is the meter's acknowledgement: until then
   the socket lingers 0 s, so a crash of the SAC resets the connection instead of closing it.

A refused push (unknown meter, bad tag, replay, malformed frame...) or a broken stream ends
that one connection with one log line and a metric.  Limits: PDU size, idle time, time to the
push, session time, concurrent sessions (see :class:`ListenerSettings`).
:class:`PushDatagramProtocol` takes pushes over UDP (no session follows: a datagram gets no
answer).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger, LogLevel

from sac.dlms.wrapper import WrapperFramer, WrapperPdu, decode_wrapper
from sac.errors import SacError
from sac.protocols.link import Link, ResponseTimeout
from sac.runtime import wait_at_most
from sac.services.acquisition import Accepted, Acquisition, PushRejected, StoreUnavailable
from sac.services.metrics import Metrics
from sac.services.session import MeterSession, SessionSettings, merge, requeue
from sac.store.connector import IStore
from sac.store.model import Ingest

__all__ = ["ListenerSettings", "PushDatagramProtocol", "PushFactory", "PushProtocol"]

METER_SAP = 1  # the meter's logical device (management), source of its pushes
HUNG_UP = "the meter hung up"


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """The listener's limits.  Each one that strikes aborts the connection (a reset: not
    acknowledged) and counts ``sac_push_closed_total{reason}``.

    A meter pushes as soon as it has connected, so a connection that has not delivered a
    complete push PDU within ``push_within`` seconds is cut ("push-timeout"), even if it
    keeps sending a byte now and then (a slowloris client resets ``idle_timeout`` with every
    byte).  At ``max_sessions`` connections, a new one evicts the oldest connection still
    waiting for its push ("evicted"): the meters' own push within milliseconds of their
    connect, so the longest waiting are silent or dribbling clients; a new connection is
    refused (``sac_push_refused_total{reason="max-sessions"}``) only when every open
    connection has delivered its push.
    """

    max_pdu: int = 4096  # bytes of APDU a wrapper header may announce
    idle_timeout: float = 30.0  # seconds without a byte from the meter, before its push
    push_within: float = 20.0  # seconds from the connect to the first complete push PDU
    session_timeout: float = 120.0  # seconds a connection may last at most
    response_timeout: float = 10.0  # seconds the meter has to answer a request
    max_sessions: int = 20_000  # connections at once (see above)
    reply_within: float = 1.0  # seconds to answer a push (logged when late)


DEFAULT_LISTENER = ListenerSettings()
DEFAULT_SESSION = SessionSettings()


class PushFactory(Factory):
    noisy = False

    def __init__(
        self,
        acquisition: Acquisition,
        store: IStore,
        *,
        reactor: Any,
        settings: ListenerSettings = DEFAULT_LISTENER,
        session: SessionSettings = DEFAULT_SESSION,
        metrics: Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.acquisition = acquisition
        self.store = store
        self.reactor = reactor
        self.settings = settings
        self.session = session
        self.metrics = metrics if metrics is not None else acquisition.metrics
        self.now = now
        self.active: set[PushProtocol] = set()
        # the connections yet to deliver their push, oldest first: eviction candidates
        self.waiting: dict[PushProtocol, None] = {}
        self._drained: list[Deferred[None]] = []  # drain(), waiting for the last session to end
        self.metrics.gauge("sac_push_sessions", lambda: len(self.active), "push connections open")

    def buildProtocol(self, addr: Any) -> Protocol:
        if len(self.active) >= self.settings.max_sessions:
            if not self.waiting:  # every connection is a meter's session: refuse this one
                self.metrics.count("sac_push_refused_total", reason="max-sessions")
                return _Refused()
            oldest = next(iter(self.waiting))  # its push is the longest overdue
            oldest._abort("evicted", "evicted for a new connection at max_sessions")
        protocol = PushProtocol(self)
        protocol.factory = self
        return protocol

    def ended(self, protocol: PushProtocol) -> None:
        self.active.discard(protocol)
        self.waiting.pop(protocol, None)
        if not self.active:
            waiting, self._drained = self._drained, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    async def drain(self, grace: float) -> int:
        """At a stop, once the listening ports are closed: wait up to ``grace`` seconds for
        the sessions in flight to end, then cut the others (their claimed commands go back to
        the queue, their meters see a reset and push again later) and wait for their last
        store writes.  The number of sessions cut."""
        if self.active:
            idle: Deferred[None] = Deferred()
            self._drained.append(idle)
            await wait_at_most([idle], grace, self.reactor)
        cut = list(self.active)
        for protocol in cut:
            protocol._abort("stopping", "the SAC is stopping")
        running = [p.running for p in cut if p.running is not None]
        await wait_at_most(running, self.acquisition.store_timeout + 1, self.reactor)
        return len(cut)


class PushProtocol(Protocol):
    log = Logger()

    def __init__(self, factory: PushFactory) -> None:
        self.f = factory
        self.settings = factory.settings
        self.framer = WrapperFramer(self.settings.max_pdu)
        self.inbox: DeferredQueue[WrapperPdu] = DeferredQueue()
        self.link: Link | None = None
        self.peer = "?"
        self.ldn: str | None = None
        self.outcome = "open"
        self.problem = ""
        self.note = ""  # said in the session's line, not a problem
        self.started = time.monotonic()
        self._timers: list[Any] = []
        self._idle: Any = None
        self._push_due: Any = None  # push_within, until the first push PDU is in
        self._closing = False
        self._gone = False  # the connection is lost
        self._extra: list[Deferred[Any]] = []  # later pushes in the same session
        self.running: Deferred[None] | None = None  # the session, from the first push on

    # --- connection

    def connectionMade(self) -> None:
        self.f.active.add(self)
        self.f.waiting[self] = None
        _linger(self.transport, reset=True)
        self.started = time.monotonic()
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", str(peer))
        reactor = self.f.reactor
        self._timers.append(
            reactor.callLater(self.settings.session_timeout, self._limit, "session-timeout")
        )
        self._idle = reactor.callLater(self.settings.idle_timeout, self._limit, "idle-timeout")
        self._push_due = reactor.callLater(self.settings.push_within, self._limit, "push-timeout")
        self.link = Link(
            self.transport.write,
            reactor,
            timeout=self.settings.response_timeout,
            # the session that waited hears of it (ResponseTimeout), puts its commands back
            # in the queue, then closes
            on_timeout=lambda: None,
            on_notification=lambda _association, _n: None,
        )
        self.running = Deferred.fromCoroutine(self._session())
        self.running.addErrback(self._crashed)

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.settings.idle_timeout)
        try:
            for pdu in self.framer.feed(data):
                if self.link is not None and self.link.accepts(pdu):
                    self.link.receive_pdu(pdu)
                elif pdu.source == METER_SAP:
                    if self._push_due is not None:
                        self._pushed()
                    self.inbox.put(pdu)
                else:
                    raise SacError(f"a PDU from wPort {pdu.source} to {pdu.destination}")
        except SacError as exc:
            self._abort("malformed", f"a bad frame: {exc}")

    def _pushed(self) -> None:
        """The first push PDU is in: no longer held to push_within, nor to be evicted; and the
        SAC's turn, so no longer to idle_timeout either (storing the push may take up to
        store_timeout; the meter waits for our answer; from here on each request of ours has
        response_timeout, and session_timeout bounds it all)."""
        for timer in (self._push_due, self._idle):
            if timer is not None and timer.active():
                timer.cancel()
        self._push_due = None
        self.f.waiting.pop(self, None)

    def connectionLost(self, reason: Any = None) -> None:
        self._gone = True
        self.f.ended(self)
        for timer in [*self._timers, self._idle, self._push_due]:
            if timer is not None and timer.active():
                timer.cancel()
        hung_up = self.outcome == "open"
        if hung_up:
            self.outcome = "closed-by-meter"
        if self.link is not None:  # requests waiting fail with the reason (unless aborted)
            self.link.lost(HUNG_UP if hung_up else self.outcome)
        for waiting in list(self.inbox.waiting):
            waiting.cancel()
        if self.running is not None and not self.running.called:
            # the push is being stored (or commands end): the session's line once it knows
            # which meter it was and how it ended
            self.running.addBoth(self._ended)
            return
        self._ended(None)

    def _ended(self, result: Any) -> Any:
        self.f.metrics.count("sac_push_sessions_total", outcome=self.outcome)
        # the session's one log line: meter, duration, outcome (and why, when it failed)
        why = self.problem or self.note
        self.log.emit(
            LogLevel.warn if self.problem else LogLevel.info,
            "push session from {peer}, meter {ldn}: {outcome} in {ms} ms{why}",
            peer=self.peer,
            ldn=self.ldn or "unknown",
            outcome=self.outcome,
            ms=round((time.monotonic() - self.started) * 1000),
            why=f": {why}" if why else "",
            problem=self.problem,
        )
        return result

    def _limit(self, why: str) -> None:
        self._abort(why, "limit reached")

    def _abort(self, outcome: str, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.f.waiting.pop(self, None)  # on its way out: not to be evicted again
        self.outcome = outcome
        self.problem = message  # logged with the session's line when the connection is gone
        self.f.metrics.count("sac_push_closed_total", reason=outcome)
        if self.link is not None:
            self.link.lost(outcome)
        self.transport.abortConnection()

    def _close(self, outcome: str) -> None:
        """The clean end of a session (FIN): the meter's push is acknowledged."""
        if self._closing:
            return
        self._closing = True
        self.outcome = outcome
        if self._gone:  # the meter hung up while its push was being stored: no one to tell
            self.note = f"{HUNG_UP} before the acknowledgement"
            return
        _linger(self.transport, reset=False)
        self.transport.loseConnection()

    def _crashed(self, failure: Any) -> None:
        self.log.failure("push session from {peer}: unexpected error", failure, peer=self.peer)
        self._abort("error", str(failure.value))

    # --- the session

    async def _session(self) -> None:
        try:
            first = await self.inbox.get()
        except CancelledError:
            return  # the connection ended before any push
        received = self.f.now()
        try:
            accepted = await self.f.acquisition.push(first.apdu, self.peer, received)
        except PushRejected as exc:
            self.ldn = exc.ldn
            self._abort(exc.reason, str(exc))
            return
        except StoreUnavailable as exc:
            self._abort("store-unavailable", str(exc))
            return
        if self._closing:
            return
        late = time.monotonic() - self.started
        if late > self.settings.reply_within:
            self.f.metrics.count("sac_push_late_total")
        if accepted.spooled or accepted.meter is None:
            self._close("spooled")
            return
        self.ldn = accepted.meter.ldn
        # no commands waiting (the store said so in the push's transaction), or no meter left
        if not accepted.commands_waiting or self._gone:
            self._close("stored")
            return
        try:
            claimed = await self.f.store.commands.claim(self.ldn, by=self.f.session.name)
        except SacError as exc:
            self.log.warn("meter {ldn}: commands not claimed: {e}", ldn=self.ldn, e=exc)
            claimed = []
        if not claimed:
            self._close("stored")
            return
        await self._commands(accepted, claimed)

    async def _commands(self, accepted: Accepted, claimed: list[Any]) -> None:
        assert self.link is not None and accepted.meter is not None and accepted.profile is not None
        profile = accepted.profile
        budget = min(float(profile.session_budget), self.settings.session_timeout)
        deadline = self.f.reactor.seconds() + budget - 2 * self.settings.reply_within
        session = MeterSession(
            self.link,
            self.f.store,
            profile,
            settings=self.f.session,
            now=self.f.now,
            source="session",
            meter=accepted.meter,
        )
        batches: list[Ingest] = []
        self.link.on_notification = lambda _a, n: self._later_push(n)
        try:
            fc = accepted.frame_counter  # inside the authenticated frame: proven
            proven = fc is not None
            if fc is None:
                ldn, fc = await session.identify()
                if ldn != accepted.meter.ldn:
                    await self._requeue(claimed, "the meter answered with another LDN")
                    self._abort("ldn-mismatch", f"LDN {ldn!r} read, {accepted.meter.ldn!r} pushed")
                    return
            await session.open_management(fc, proven=proven)
            batches.append(await session.run_commands(claimed, deadline, self.f.reactor))
            await session.close()
        except SacError as exc:
            await session.abandon()
            await self._requeue(claimed, str(exc))
            await self._store(merge(batches))
            timeout = isinstance(exc, ResponseTimeout)
            self._abort("response-timeout" if timeout else "session-failed", str(exc))
            return
        await self._store(merge(batches))
        self._close("commands")

    def _later_push(self, notification: Any) -> None:
        self.log.info("meter {ldn}: a second push in one session is ignored", ldn=self.ldn)

    async def _store(self, batch: Ingest) -> None:
        if not (batch.readings or batch.events or batch.statuses):
            return
        try:
            await self.f.store.readings.ingest(batch)
        except SacError as exc:
            self.log.warn("meter {ldn}: session values not stored: {e}", ldn=self.ldn, e=exc)

    async def _requeue(self, claimed: list[Any], why: str) -> None:
        await requeue(self.f.store, claimed, why, attempts=self.f.session.command_attempts)


class _Refused(Protocol):
    """A connection beyond max_sessions: reset at once.  (Returning no protocol would let
    Twisted close the socket with a FIN, which a meter that has already written its push
    could read as its acknowledgement.)"""

    def connectionMade(self) -> None:
        _linger(self.transport, reset=True)
        self.transport.abortConnection()


_RESET = struct.pack("ii", 1, 0)
_GRACEFUL = struct.pack("ii", 0, 0)


def _linger(transport: Any, *, reset: bool) -> None:
    """SO_LINGER 0 until the push is stored: if this process dies meanwhile, the kernel
    resets the meter's connection (RST) instead of closing it (FIN).  A FIN from the SAC
    then always means "stored", and the meter can treat anything else as not delivered."""
    for _ in range(4):  # down through wrappers (TLS) to the TCP transport
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            with contextlib.suppress(OSError):
                handle.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, _RESET if reset else _GRACEFUL
                )
            return
        transport = getattr(transport, "transport", None)  # TLS: the connection under it
        if transport is None:
            return  # not a socket (a test transport)


class PushDatagramProtocol(DatagramProtocol):
    """DATA-NOTIFICATIONs over UDP: one wrapper PDU a datagram, stored (or spooled); no
    answer, no session."""

    log = Logger()
    noisy = False

    def __init__(
        self,
        acquisition: Acquisition,
        *,
        max_pdu: int = 4096,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.acquisition = acquisition
        self.max_pdu = max_pdu
        self.now = now

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        host = addr[0]
        try:
            pdu = decode_wrapper(data, self.max_pdu)
        except SacError as exc:
            self.acquisition.metrics.count("sac_push_rejected_total", reason="malformed")
            self.log.warn("UDP push from {host}: a bad datagram: {e}", host=host, e=exc)
            return
        d = Deferred.fromCoroutine(self.acquisition.push(pdu.apdu, host, self.now()))
        d.addErrback(self._failed, host)

    def _failed(self, failure: Any, host: str) -> None:
        if failure.check(PushRejected, StoreUnavailable):
            self.log.warn("UDP push from {host} refused: {e}", host=host, e=failure.value)
            return
        self.log.failure("UDP push from {host}: unexpected error", failure, host=host)
