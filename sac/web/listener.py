"""The web listener: Twisted's HTTP server with the limits a port open to strangers needs.

* **Connections at once** (``max_connections``): beyond, a new connection is closed as soon
  as it is accepted (``sac_web_refused_total{reason="max-connections"}``), so that the web
  port can never take the file descriptors the push listener and the store need.
* **Deadlines** that bytes do not reset (Twisted's own idle timeout restarts with every
  byte, so a client sending one every few seconds could hold a connection for ever):
  ``header_timeout`` seconds from the connection (or from the end of the answer before) to
  a request's complete headers, then ``body_timeout`` seconds to its complete body.  A
  request late on either is cut (``sac_web_closed_total{reason="header-timeout"|
  "body-timeout"}``, one info line).  Once a request is in, the application's time is not
  counted.
* **No version**: answers carry no ``Server`` header (Twisted names itself and its version).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from sac.services.metrics import Metrics

__all__ = ["QuietRequest", "WebLimits", "WebSite"]


@dataclass(frozen=True, slots=True)
class WebLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0  # seconds to a request's complete headers
    body_timeout: float = 120.0  # seconds from its headers to its complete body
    idle_timeout: float = 60.0  # Twisted's: silence between bytes, between requests


class QuietRequest(Request):
    """A request whose answer names no server (nor its version), timed from its complete
    arrival to its answer's end (``sac_web_request_seconds``)."""

    began: float | None = None

    def process(self) -> None:
        self.began = time.monotonic()
        super().process()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:  # the headers go out with the first write
            self.responseHeaders.removeHeader(b"server")
        super().write(data)


class _Channel(HTTPChannel):
    """One HTTP connection with its deadlines (see the module's docstring)."""

    _deadline: Any = None
    _stage = ""
    _lost = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.opened(self)
        self._arm("header", self.site.limits.header_timeout)

    def allHeadersReceived(self) -> None:
        self._arm("body", self.site.limits.body_timeout)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if self.persistent and not self._lost:
            # the next request's, armed first: a request sent already (pipelined) is read
            # by requestDone itself, and moves the deadline on as it arrives
            self._arm("header", self.site.limits.header_timeout)
        super().requestDone(request)

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        self._disarm()
        self.site.closed(self)
        super().connectionLost(reason)

    def _arm(self, stage: str, seconds: float) -> None:
        self._disarm()
        self._stage = stage
        self._deadline = self.callLater(seconds, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        self.site.late(self, self._stage)
        self.transport.abortConnection()


class WebSite(Site):
    """A :class:`twisted.web.server.Site` with :class:`WebLimits`, counted in ``metrics``."""

    protocol = _Channel  # type: ignore[assignment]
    requestFactory = QuietRequest
    noisy = False
    _logger = Logger()

    def __init__(
        self,
        resource: Any,
        limits: WebLimits,
        metrics: Metrics,
        reactor: Any = None,
        request_factory: type[Request] = QuietRequest,
    ) -> None:
        super().__init__(
            resource, requestFactory=request_factory, timeout=limits.idle_timeout, reactor=reactor
        )
        self.limits = limits
        self.metrics = metrics
        self.connections: set[_Channel] = set()
        metrics.gauge("sac_web_connections", lambda: len(self.connections))

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.connections) >= self.limits.max_connections:
            self.metrics.count("sac_web_refused_total", reason="max-connections")
            return None  # the port closes the socket at once
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        """A request answered (Twisted calls this from ``Request.finish``)."""
        began = getattr(request, "began", None)
        if began is not None:
            part = _part(request.path)
            self.metrics.observe("sac_web_request_seconds", time.monotonic() - began, part=part)
        super().log(request)

    def opened(self, channel: _Channel) -> None:
        self.connections.add(channel)

    def closed(self, channel: _Channel) -> None:
        self.connections.discard(channel)

    def late(self, channel: _Channel, stage: str) -> None:
        self.metrics.count("sac_web_closed_total", reason=f"{stage}-timeout")
        peer = channel.transport.getPeer()
        self._logger.info(
            "web: {peer} cut: its request's {stage} took over {seconds:g} s",
            peer=getattr(peer, "host", str(peer)),
            stage=f"{stage}s" if stage == "header" else stage,
            seconds=getattr(self.limits, f"{stage}_timeout"),
        )


# the web's parts (sac.web.app's mounts), by the first segment of a request's path
_PARTS = {b"api": "api", b"soap": "soap", b"admin": "admin", b"static": "static"}


def _part(path: bytes) -> str:
    return _PARTS.get(path.lstrip(b"/").split(b"/", 1)[0], "pages")
