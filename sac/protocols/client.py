"""The polling client: the SAC dials a meter that listens (mains-powered or lab meters).

:class:`PollProtocol` carries one session on the connection it was given: Public association
to read the LDN and the frame counter (the meter must be the one we dialled), the meter's key
loaded by LDN, the Management association from FC + 1, the profile's objects read (block
transfer and selective access for the daily profile and the logbooks), stored, then the
meter's queued commands, then a clean close.  :func:`poll_meter` dials with a connect
timeout and runs it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from sac.dlms.wrapper import WrapperFramer
from sac.errors import ProtocolError, SacError
from sac.profiles import ProfileRegistry
from sac.protocols.link import Link
from sac.services.session import MeterSession, SessionSettings, merge, requeue
from sac.store.connector import IStore
from sac.store.model import Ingest

__all__ = ["PollFailed", "PollProtocol", "PollResult", "poll_meter"]


class PollFailed(SacError):
    """A poll that could not be completed (the reason in the message)."""


class PollResult:
    """What a poll stored; ``skipped``: the objects it could not read, each with why."""

    def __init__(
        self, ldn: str, readings: int, events: int, commands: int, skipped: tuple[str, ...] = ()
    ) -> None:
        self.ldn = ldn
        self.readings = readings
        self.events = events
        self.commands = commands
        self.skipped = skipped

    def __repr__(self) -> str:
        return (
            f"PollResult({self.ldn}, readings={self.readings}, events={self.events},"
            f" commands={self.commands}, skipped={len(self.skipped)})"
        )


class PollProtocol(Protocol):
    log = Logger()

    def __init__(self, *, reactor: Any, response_timeout: float, max_pdu: int = 0xFFFF) -> None:
        self.reactor = reactor
        self.framer = WrapperFramer(max_pdu)
        self.response_timeout = response_timeout
        self.link: Link | None = None
        self.closed: Deferred[None] = Deferred()
        self.error: str | None = None

    def connectionMade(self) -> None:
        self.link = Link(
            self.transport.write,
            self.reactor,
            timeout=self.response_timeout,
            on_timeout=lambda: self.abort("the meter stopped answering"),
        )

    def dataReceived(self, data: bytes) -> None:
        assert self.link is not None
        try:
            for pdu in self.framer.feed(data):
                self.link.receive_pdu(pdu)
        except SacError as exc:
            self.abort(f"a bad frame: {exc}")

    def abort(self, why: str) -> None:
        if self.error is None:
            self.error = why
        if self.link is not None:
            self.link.lost(why)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.link is not None:
            self.link.lost(self.error or "closed by the meter")
        if not self.closed.called:
            self.closed.callback(None)


async def poll_meter(
    ldn: str,
    address: str,
    *,
    store: IStore,
    registry: ProfileRegistry,
    reactor: Any,
    settings: SessionSettings,
    connect_timeout: float = 10.0,
    response_timeout: float = 10.0,
    session_budget: float = 120.0,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> PollResult:
    """Dial ``address`` (host:port), poll the meter ``ldn`` there, store what it says and
    run its queued commands.  PollFailed says why a poll did not complete."""
    meter = await store.meters.get(ldn)
    if meter is None:
        raise PollFailed(f"no meter {ldn}")
    profile = registry.match(assigned=meter.profile)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PollFailed(f"meter {ldn}: address {address!r} is not host:port")
    endpoint = HostnameEndpoint(reactor, host.strip("[]"), int(port), timeout=connect_timeout)
    protocol = PollProtocol(reactor=reactor, response_timeout=response_timeout)
    try:
        await connectProtocol(endpoint, protocol)
    except Exception as exc:
        raise PollFailed(f"meter {ldn}: cannot connect to {address}: {exc}") from None
    assert protocol.link is not None
    session = MeterSession(
        protocol.link, store, profile, settings=settings, now=now, source="poll", meter=meter
    )
    deadline = reactor.seconds() + session_budget
    batches: list[Ingest] = []
    claimed: list[Any] = []
    try:
        found, fc = await session.identify()
        if found != ldn:
            raise PollFailed(f"meter {ldn}: {address} answers as {found!r}")
        await session.open_management(fc)  # the Public client's FC: a hint
        batches.append(await session.poll())
        await store.readings.ingest(batches[-1])  # what was read, even when some of it was not
        if session.broken is not None:
            raise session.broken
        claimed = await store.commands.claim(ldn, by=settings.name)
        if claimed:
            batches.append(await session.run_commands(claimed, deadline, reactor))
            await store.readings.ingest(batches[-1])
        await session.close()
    except (ProtocolError, SacError) as exc:
        protocol.abort(str(exc))
        await protocol.closed
        await session.abandon()
        await requeue(store, claimed, f"poll failed: {exc}", attempts=settings.command_attempts)
        if isinstance(exc, PollFailed):
            raise
        raise PollFailed(f"meter {ldn}: {exc}") from None
    protocol.transport.loseConnection()
    await protocol.closed
    total = merge(batches)
    return PollResult(
        ldn, len(total.readings), len(total.events), len(claimed), tuple(session.skipped)
    )
