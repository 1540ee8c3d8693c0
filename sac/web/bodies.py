"""Request bodies bounded before they are read.

Twisted reads a request's whole body before any resource sees it, and parses a form's into
memory: a 30 MB user name on ``/login`` would be read, parsed and handed over whole.
:class:`BoundedRequest` decides as soon as the headers are in:

* each route has a most body bytes (:meth:`sac.web.app.Web.body_limit`): a form 64 KiB, the
  key CSV upload ``[web] max_upload_mb`` and its envelope, SOAP and the JSON API 10 MiB.  A
  ``Content-Length`` above it is answered 413 at once, before a byte of the body; a chunked
  body is counted and refused the same way the moment it goes over;
* an upload (``POST /meters/import``) waits, with the connection paused, while its session
  is checked (:meth:`sac.web.app.Web.may_upload`): without one it is sent to the sign-in
  (303), with too low a role refused (403), before its body is read.

A refused body is not kept: what the client still sends of it is read and dropped, and the
connection closed once it is all in -- closing while the client still sends would reset the
connection under the answer, which the client would then not see -- or after
:data:`DRAIN_SECONDS` at the most.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from sac.web.listener import QuietRequest

__all__ = ["DRAIN_SECONDS", "FORM_BODY", "BoundedRequest"]

FORM_BODY = 64 * 2**10  # bytes of a form's body (the largest, a meter's, is about 1 KiB)
DRAIN_SECONDS = 10.0

_REASONS = {
    303: b"See Other",
    403: b"Forbidden",
    413: b"Content Too Large",
    503: b"Service Unavailable",
}


class BoundedRequest(QuietRequest):
    """A request whose body is bounded (and an upload's session checked) before it is read.
    ``web`` is the :class:`sac.web.app.Web` (the factory :meth:`bound` makes sets it)."""

    web: Any = None
    log = Logger()

    @classmethod
    def bound(cls, web: Any) -> type[BoundedRequest]:
        return type("BoundedWebRequest", (cls,), {"web": web})

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._limit: int | None = None
        self._received = 0
        self._refused = False
        self._admission: Deferred[None] | None = None
        self._drain_call: Any = None

    # --- what the channel calls ------------------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        # the request line is parsed, not yet given to the request: the channel holds it
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        self._limit = self.web.body_limit(method, path)
        if length is not None and length > self._limit:
            self.content = io.BytesIO()
            self._refuse(413, f"a request body here is at most {self._limit} bytes\n")
            return
        super().gotLength(length)
        if self.web.is_upload(method, path):
            self._admit()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self.content.close()
            self.content = io.BytesIO()
            self._refuse(413, f"a request body here is at most {self._limit} bytes\n")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:  # the whole body is in and dropped: the answer is sent, close
            self._close()
            return
        if self._admission is not None and not self._admission.called:
            self._admission.addCallback(lambda _: self.requestReceived(command, path, version))
            self._admission.addErrback(self._failed_late)
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        super().connectionLost(reason)

    # --- an upload's session, before its body ----------------------------------------------

    def _admit(self) -> None:
        # TCP is a push producer; TLS wraps it and hands pausing down to it
        transport = self.channel.transport
        if not IPushProducer.providedBy(transport) and not hasattr(transport, "pauseProducing"):
            transport = None  # no way to pause: the body is read meanwhile (still bounded)
        if transport is not None:
            transport.pauseProducing()  # the body waits in the network, not here
        check = Deferred.fromCoroutine(self.web.may_upload(self))

        def decided(answer: tuple[int, str, bytes] | None) -> None:
            if answer is not None:
                status, text, location = answer
                self._drop_content()
                self._refuse(status, text, location)
            # (unless the channel holds the transport paused itself: its answers wait)
            if transport is not None and not getattr(self.channel, "_waitingForTransport", 0):
                transport.resumeProducing()

        def failed(failure: Any) -> None:
            self.log.info("web: an upload's session could not be checked: {e}", e=failure.value)
            decided((503, "the store does not answer; try again in a moment\n", b""))

        check.addCallbacks(decided, failed)
        self._admission = check

    def _failed_late(self, failure: Any) -> None:
        self.log.failure("web: {path} failed after its session check", failure, path=self.path)
        if not self.finished and not self._disconnected:
            self._close()

    def _drop_content(self) -> None:
        self.content.close()
        self.content = io.BytesIO()

    # --- refusing ---------------------------------------------------------------------------

    def _refuse(self, status: int, text: str, location: bytes = b"") -> None:
        """Answer ``status`` now, on the wire (the request is not processed); read and drop
        the rest of the body, then close."""
        self._refused = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        body = text.encode()
        head = [
            b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(body),
            b"Cache-Control: no-store",
            b"Connection: close",
        ]
        if location:
            head.append(b"Location: " + location)
        self.channel.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.log.info(
            "web: {status} before the body of {path} from {peer}",
            status=status,
            path=getattr(self.channel, "_path", b"").decode("latin-1")[:200],
            peer=str(self.channel.transport.getPeer()),
        )
        from twisted.internet import reactor

        self._drain_call = reactor.callLater(DRAIN_SECONDS, self._close)

    def _close(self) -> None:
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self.channel.transport.loseConnection()
