"""The polling client's connection: the SAC dials a meter that listens (mains-powered or
lab meters).

:func:`dial` connects with a connect timeout; :class:`PollProtocol` frames the wrapper PDUs
of that connection and hands them to its :class:`~sac.protocols.link.Link`, whose requests
the poll session (:func:`sac.services.poll.poll_meter`) makes.  A bad frame or a request
left unanswered aborts the connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from sac.dlms.wrapper import WrapperFramer
from sac.errors import SacError
from sac.protocols.link import Link

__all__ = ["PollProtocol", "dial"]


class PollProtocol(Protocol):
    """One poll's connection: ``closed`` fires when it ends; ``error`` says why it was cut."""

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


async def dial(
    reactor: Any, host: str, port: int, *, connect_timeout: float, response_timeout: float
) -> PollProtocol:
    """Connect to a meter that listens: the connection's protocol, its link ready for the
    session's requests."""
    endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    protocol = PollProtocol(reactor=reactor, response_timeout=response_timeout)
    await connectProtocol(endpoint, protocol)
    return protocol
