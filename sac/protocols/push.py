"""The push listener: meters call in, push a ciphered DATA-NOTIFICATION, and answer our
requests on the same connection (docs/uni-ts-11291.md §5;
docs/architecture.md, "A meter calls in").

One :class:`PushProtocol` a connection.  It frames wrapper PDUs (the PDU size bounded by the
header, before any body is read), keeps the connection's limits and its linger, carries a
:class:`~sac.protocols.link.Link` for the requests that follow the push, and calls the
handler its :class:`PushListener` was given (the push session,
:class:`sac.services.push.PushSession`) with itself as an
:class:`~sac.protocols.interface.IPushConnection`.  The handler closes the connection
cleanly once the push is stored -- the clean close is the meter's acknowledgement: until
then the socket lingers 0 s, so a crash of the SAC resets the connection instead of closing
it -- or aborts it.

A broken stream or a limit ends that one connection with one log line and a metric.  Limits:
PDU size, idle time, time to the push, session time, concurrent sessions (see
:class:`ListenerSettings`).  :class:`WrapperDatagrams` reads wrapper PDUs from datagrams.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger, LogLevel

from sac.dlms.wrapper import WrapperFramer, WrapperPdu, decode_wrapper
from sac.errors import SacError
from sac.protocols.interface import IMetrics, PushHandler
from sac.protocols.link import Link
from sac.runtime import wait_at_most

__all__ = ["ListenerSettings", "PushListener", "PushProtocol", "WrapperDatagrams"]

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


class PushListener(Factory):
    """The connections of one push listener: their limits, and the handler each one runs
    (``handler(connection)``, a coroutine: the session, to its end).  ``last_writes``: at a
    stop, how long the sessions cut may take to finish their store writes."""

    noisy = False

    def __init__(
        self,
        handler: PushHandler,
        *,
        reactor: Any,
        settings: ListenerSettings = DEFAULT_LISTENER,
        metrics: IMetrics,
        last_writes: float,
    ) -> None:
        self.handler = handler
        self.reactor = reactor
        self.settings = settings
        self.metrics = metrics
        self.last_writes = last_writes
        self.active: set[PushProtocol] = set()
        # the connections yet to deliver their push, oldest first: eviction candidates
        self.waiting: dict[PushProtocol, None] = {}
        self._drained: list[Deferred[None]] = []  # drain(), waiting for the last session to end
        self.metrics.gauge("sac_push_connections", lambda: len(self.active))

    def buildProtocol(self, addr: Any) -> Protocol:
        if len(self.active) >= self.settings.max_sessions:
            if not self.waiting:  # every connection is a meter's session: refuse this one
                self.metrics.count("sac_push_refused_total", reason="max-sessions")
                return _Refused()
            oldest = next(iter(self.waiting))  # its push is the longest overdue
            oldest.abort("evicted", "evicted for a new connection at max_sessions")
        protocol = PushProtocol(self)
        protocol.factory = self
        return protocol

    def session_ended(self, protocol: PushProtocol, seconds: float) -> None:
        """A connection has ended (after its log line), ``seconds`` after its connect: a
        subclass keeps its record (:class:`sac.services.push.PushFactory`)."""

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
            protocol.abort("stopping", "the SAC is stopping")
        running = [p.running for p in cut if p.running is not None]
        await wait_at_most(running, self.last_writes, self.reactor)
        return len(cut)


class PushProtocol(Protocol):
    """One meter's connection: the :class:`~sac.protocols.interface.IPushConnection` its
    handler sees, and the connection's one log line when it ends."""

    log = Logger()

    def __init__(self, factory: PushListener) -> None:
        self.f = factory
        self.settings = factory.settings
        self.framer = WrapperFramer(self.settings.max_pdu)
        self.inbox: DeferredQueue[WrapperPdu] = DeferredQueue()
        self.link: Link | None = None
        self.peer = "?"
        self.ldn: str | None = None
        # what the session read over it beyond the push, and what it could not (with why)
        self.read: tuple[str, ...] = ()
        self.skipped: tuple[str, ...] = ()
        self.outcome = "open"
        self.problem = ""
        self.note = ""  # said in the session's line, not a problem
        self.started = time.monotonic()
        self._timers: list[Any] = []
        self._idle: Any = None
        self._push_due: Any = None  # push_within, until the first push PDU is in
        self._closing = False
        self._gone = False  # the connection is lost
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
        self.running = Deferred.fromCoroutine(self.f.handler(self))
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
            self.abort("malformed", f"a bad frame: {exc}")

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
        seconds = time.monotonic() - self.started
        self.f.metrics.count("sac_push_sessions_total", outcome=self.outcome)
        self.f.metrics.observe("sac_push_session_seconds", seconds, outcome=self.outcome)
        # the session's one log line: meter, duration, outcome (and why, when it failed)
        why = self.problem or self.note
        self.log.emit(
            LogLevel.warn if self.problem else LogLevel.info,
            "push session from {peer}, meter {ldn}: {outcome} in {ms} ms{why}",
            peer=self.peer,
            ldn=self.ldn or "unknown",
            outcome=self.outcome,
            ms=round(seconds * 1000),
            why=f": {why}" if why else "",
            problem=self.problem,
        )
        self.f.session_ended(self, seconds)
        return result

    def _limit(self, why: str) -> None:
        self.abort(why, "limit reached")

    def abort(self, outcome: str, message: str) -> None:
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

    def close(self, outcome: str) -> None:
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

    # --- what the handler sees (IPushConnection)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def gone(self) -> bool:
        return self._gone

    def first_push(self) -> Deferred[WrapperPdu]:
        return self.inbox.get()

    def _crashed(self, failure: Any) -> None:
        self.log.failure("push session from {peer}: unexpected error", failure, peer=self.peer)
        self.abort("error", str(failure.value))


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


class WrapperDatagrams(DatagramProtocol):
    """One wrapper PDU a datagram: :meth:`pduReceived` with each one, :meth:`malformed` with
    a datagram that is not one (subclasses say what to do with them)."""

    noisy = False

    def __init__(self, *, max_pdu: int = 4096) -> None:
        self.max_pdu = max_pdu

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        host = addr[0]
        try:
            pdu = decode_wrapper(data, self.max_pdu)
        except SacError as exc:
            self.malformed(host, exc)
            return
        self.pduReceived(pdu, host)

    def pduReceived(self, pdu: WrapperPdu, host: str) -> None:
        raise NotImplementedError

    def malformed(self, host: str, error: SacError) -> None:
        raise NotImplementedError
