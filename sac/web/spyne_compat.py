"""Serve a spyne SOAP 1.1 application from a Twisted web resource, with asynchronous methods.

Why our own resource and not spyne's ``spyne.server.twisted.TwistedWebResource``: on
Twisted 26 that one needs more than a shim.  Checked against spyne 2.14.0:

* ``import spyne.server.twisted`` fails: its package imports the WebSocket resource, which
  imports ``twisted.python.constants`` (gone from Twisted; ``constantly`` has the names).
* With that shimmed, every POST is a ``Client.RequestNotAllowed`` fault (HTTP 405): the
  Soap11 protocol compares ``ctx.transport.get_request_method()`` with the str ``"POST"``
  and the Twisted transport hands it ``request.method``, the bytes ``b"POST"``; the
  content type reaches ``cgi.parse_header`` as bytes too.
* ``GET ?wsdl`` crashes (Twisted's "Processing Failed" page): the WSDL location is joined
  from str parts and the bytes ``request.uri``.
* With those patched, a method returning a Deferred works, but an ``async def`` method
  returns a coroutine, which spyne tries to serialise ("Argument must be bytes or unicode,
  got 'coroutine'").
* It has no body limit (``max_content_length`` is never checked on that path), runs the
  body through ``cgi.FieldStorage`` looking for uploads, imports ``cgi`` (gone in Python
  3.13), takes the client address from ``X-Forwarded-For`` and friends (anyone can send
  those), and answers any unexpected exception with a fixed "InternalError" fault that
  nobody can match to a log line.

Patching all of that in place would mean monkeypatching private functions of an LGPL
library at import time.  :class:`SoapResource` is instead a small ``Resource`` over
spyne's transport-neutral machinery (:class:`spyne.server.http.HttpBase`: parse, find the
method, deserialise, call, serialise), the way spyne's WSGI server uses it.  It never
imports ``spyne.server.twisted``, so no ``twisted.python.constants`` shim is needed and
none is installed: nothing else in the process may come to depend on a fake Twisted
module.

How a call runs, all on the reactor thread (no threads: the store is asynchronous):
spyne parses and validates the envelope; the method is called through
:func:`~twisted.internet.defer.maybeDeferred`, so it may be an ``async def``, return a
Deferred, or be a plain function; the resource awaits the result, then lets spyne
serialise it.  A :class:`spyne.Fault` from the method is sent as that fault; any other
exception is logged with its traceback under a fresh incident id and the client gets only
``soap:Server`` / "internal error, incident <id>".  SOAP 1.1 over HTTP sends every fault
with status 500.  Because spyne sees only the pending Deferred, its ``method_return_object``
event fires before the result exists, and it does not log the method's exceptions (we do).
spyne still logs, through the standard ``logging`` module, the requests it cannot parse or
validate -- at ERROR, the body included: the ``spyne`` loggers may want a level.  Closing
a context would run ``gc.collect()`` once a second on the reactor thread: this module sets
``spyne.const.MIN_GC_INTERVAL`` so that it never does.

How a method reaches the HTTP request (to authenticate before doing anything, say):
``ctx.transport.req`` is the :class:`twisted.web.server.Request` -- the same attribute
spyne's own transports use -- so ``ctx.transport.req.getHeader(b"authorization")`` and
``ctx.transport.req.getClientAddress()`` are there (the TCP peer: a proxy's
``X-Forwarded-For`` is not trusted here).  An ``async def`` method can await the store's
check first and raise a ``Fault("Client.Authentication", ...)`` to refuse.
``ctx.transport.get_peer()`` gives the same address as a :class:`spyne.Address`.

The WSDL (``GET <mount>?wsdl``) names as the service location the ``location`` given (the
SAC's ``[web] public_url``), else the URL the client used: scheme, ``Host`` header and path,
so a client such as zeep posts back to where it fetched the WSDL.  spyne can build an
application's WSDL only once (a second ``build_interface_document`` drops the ``service``
and ``portType`` elements), so the resource builds it once and rewrites the ``location``
attributes for each request.

A call must come as ``text/xml`` or ``application/soap+xml`` (415 otherwise).  Before
spyne sees a body, it is parsed once with entities, DTDs and the network off: a document type
declaration (a SOAP message has none; entity tricks come with it), an envelope without
exactly one Body holding exactly one element, or a Fault sent as a call are refused as
``Client.SoapError``.  spyne 2.14 crashes on each of those (``AttributeError``, lxml's
"Internal error in XML Schema validation").  Anything else spyne raises while reading a
request is the client's input too: ``Client.BadRequest``, logged at info.

Twisted reads the whole request body (into a temporary file when it is large) before a
resource sees it; ``max_body`` keeps anything larger away from the XML parser (413), it
does not stop the upload itself.

spyne 2.14 on Python 3.12 and 3.13, without touching site-packages:

* ``spyne.util.six`` (an old vendored ``six``) puts on ``sys.meta_path`` an importer that has
  ``find_module`` and no ``find_spec``; Python 3.12 no longer asks such an importer, so
  ``spyne.util.six.moves`` (which spyne imports everywhere) is not found.  This module puts
  :class:`_SixMovesFinder` on ``sys.meta_path`` before spyne is first imported (``sac.web``
  imports this module first): it answers ``find_spec`` for those names by asking six's own
  importer, and lets it load them as before.
* spyne's SOAP protocol imports ``cgi`` (for ``cgi.parse_header``), gone from the standard
  library in Python 3.13: the ``legacy-cgi`` distribution provides it (``setup.cfg``
  requires it there).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
import uuid
import warnings
from email.message import Message
from inspect import iscoroutine
from types import ModuleType
from typing import Any

_SIX = "spyne.util.six"


class _SixMovesLoader(importlib.abc.Loader):
    """Loads what six's importer knows (``spyne.util.six.moves``, ``...moves.urllib.parse``,
    a moved standard module) by asking that importer.  Import makes an empty module for the
    spec first; six's ``load_module`` answers what ``sys.modules`` holds, so that empty one
    leaves ``sys.modules`` and six puts its own there, which the import then returns (a moved
    standard module, ``http.cookies`` say, keeps its own ``__spec__``)."""

    def __init__(self, importer: Any) -> None:
        self.importer = importer

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        del sys.modules[name]
        self.importer.load_module(name)


class _SixMovesFinder(importlib.abc.MetaPathFinder):
    """``find_spec`` for the names spyne's vendored six serves: what its importer's
    ``find_module`` (all it has) says it knows."""

    sac_six_moves = True  # which finder this is, across a reload of this module

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(_SIX + ".moves"):
            return None
        importer = getattr(sys.modules.get(_SIX), "_importer", None)
        if importer is None or importer.find_module(fullname) is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, _SixMovesLoader(importer), is_package=importer.is_package(fullname)
        )


def _install_six_moves_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "sac_six_moves", False)]
    sys.meta_path.append(_SixMovesFinder())


_install_six_moves_finder()

# spyne's SOAP module imports cgi, deprecated on 3.11 and 3.12 (gone on 3.13: legacy-cgi
# provides it): imported first here, where its warning, which no operator can act on, is
# silenced (only that one)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'cgi' is deprecated", DeprecationWarning)
    import spyne.protocol.soap.soap11  # noqa: F401

# spyne only now: its first import needs the finder above on Python 3.12+.
from lxml import etree  # noqa: E402
from spyne import Address, Application, Fault, const  # noqa: E402
from spyne.server.http import HttpBase, HttpMethodContext, HttpTransportContext  # noqa: E402
from twisted.internet.defer import Deferred, maybeDeferred  # noqa: E402
from twisted.logger import Logger  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import NOT_DONE_YET  # noqa: E402

__all__ = ["DEFAULT_MAX_BODY", "SOAP11_ENV", "Serialised", "SoapResource"]

# Closing a call's context, spyne runs a full gc.collect() at most once a second (for the
# files of multipart uploads, which we never parse): on the reactor thread that is tens to
# hundreds of ms with the SAC's heap, every second of SOAP traffic (issue 23).  Never.
const.MIN_GC_INTERVAL = float("inf")

DEFAULT_MAX_BODY = 10 * 2**20
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_MEDIA_TYPES = ("text/xml", "application/soap+xml")
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
# Built once with this address, then rewritten per request (see the module docstring).
_PLACEHOLDER = "http://spyne-compat.invalid/"
_HOST = re.compile(rb"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_XML = b"text/xml; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"


class Serialised:
    """An answer a method wrote itself: the whole SOAP envelope, sent as it is (status 200,
    spyne's headers) instead of spyne serialising the method's result -- for answers too
    big for spyne's object model (:mod:`sac.web.soap_export`).  The method still declares
    its ``_returns`` for the WSDL; these bytes must be what spyne would write for it."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


class _TransportContext(HttpTransportContext):
    """What spyne asks of the HTTP transport, answered from a Twisted request as str: the
    Soap11 protocol compares the method with ``"POST"`` and parses the content type."""

    def get_request_method(self) -> str:
        return self.req.method.decode("latin-1")

    def get_request_content_type(self) -> str | None:
        value = self.req.getHeader(b"content-type")
        return None if value is None else value.decode("latin-1")

    def get_path(self) -> str:
        return self.req.path.decode("latin-1")

    def get_peer(self) -> Address:
        peer = self.req.getClientAddress()
        kind = Address.TCP6 if getattr(peer, "type", "") == "TCP6" else Address.TCP4
        return Address(type=kind, host=getattr(peer, "host", None), port=getattr(peer, "port", 0))


class _MethodContext(HttpMethodContext):
    HttpTransportContext = _TransportContext


class SoapResource(Resource):
    """``application`` (Soap11 in and out) at this resource: ``GET ?wsdl`` answers the
    WSDL, ``POST`` a call, any other request 405; a body over ``max_body`` bytes is
    refused with 413 before it is parsed.  Mount it as a leaf (Klein: a ``branch=True``
    route returning it).  The resource owns the application: spyne ties an application
    to one server transport."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        application: Application,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        location: str | None = None,
    ) -> None:
        super().__init__()
        self.location = location  # the WSDL's service address; None: the URL the client used
        if any(d.aux is not None for d in application.interface.method_id_map.values()):
            # spyne would hand us their contexts to run after the answer; we do not.
            raise ValueError("spyne auxiliary methods are not supported")
        self.max_body = max_body
        self._server = HttpBase(application, max_content_length=max_body)
        self._wsdl: etree._Element | None = None

    def render(self, request: Any) -> bytes | int:
        wants_wsdl = _asks_wsdl(request.uri)
        if request.method == b"GET" and wants_wsdl:
            return self._render_wsdl(request)
        if request.method != b"POST":
            request.setHeader(b"allow", b"GET" if wants_wsdl else b"POST")
            return _plain(request, 405, "SOAP calls are POSTed; GET ?wsdl for the WSDL")
        if _media_type(request) not in SOAP_MEDIA_TYPES:
            return _plain(
                request,
                415,
                "a SOAP call's Content-Type is text/xml (SOAP 1.1) or application/soap+xml,"
                " with an optional charset parameter",
            )
        request.content.seek(0)
        body = request.content.read(self.max_body + 1)
        if len(body) > self.max_body:
            return _plain(request, 413, f"request body over {self.max_body} bytes")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        d = Deferred.fromCoroutine(self._call(request, body))
        d.addCallback(self._send, request, gone)
        d.addErrback(self._broken, request, gone)
        return NOT_DONE_YET

    def _render_wsdl(self, request: Any) -> bytes:
        if self._wsdl is None:
            wsdl11 = self._server.doc.wsdl11
            if wsdl11 is None:
                return _plain(request, 404, "this application has no WSDL")
            if wsdl11.get_interface_document() is None:
                wsdl11.build_interface_document(_PLACEHOLDER)
            self._wsdl = etree.fromstring(wsdl11.get_interface_document())
        location = self.location or _location(request)
        for address in self._wsdl.iterfind(f".//{{{WSDL_NS}}}port/*[@location]"):
            address.set("location", location)
        request.setHeader(b"content-type", _XML)
        return etree.tostring(self._wsdl, xml_declaration=True, encoding="utf-8")

    async def _call(self, request: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Parse, call, serialise; returns (status, headers, body), a fault included."""
        server = self._server
        ctx = p_ctx = _MethodContext(server, request, server.app.out_protocol.mime_type)
        try:
            ctx.in_string = [body]
            try:
                charset = _charset(request)
                _check_envelope(body, charset)
                p_ctx = server.generate_contexts(ctx, charset)[0]
                if p_ctx.in_error is None:
                    server.get_in_object(p_ctx)
            except Exception as e:
                return self._refused(e)
            if p_ctx.in_error is not None:
                self.log.info("soap: request refused: {fault!r}", fault=p_ctx.in_error)
                return self._fault(p_ctx.in_error)
            return await self._answer(p_ctx)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            self.log.failure(
                "soap: {method} at {uri} failed (incident {incident})",
                method=_name(p_ctx),
                uri=_uri(request),
                incident=incident,
            )
            return self._fault(Fault("Server", f"internal error, incident {incident}"))
        finally:
            p_ctx.close()  # spyne's primary context is a copy of ``ctx``

    def _refused(self, error: Exception) -> tuple[int, dict[str, str], bytes]:
        """The fault for a request that could not be read (no method has run)."""
        if isinstance(error, LookupError | UnicodeDecodeError):
            # An unknown or wrong charset in Content-Type: spyne lets these escape.
            return self._fault(Fault("Client.BadEncoding", f"cannot decode the body: {error}"))
        if isinstance(error, Fault):
            self.log.info("soap: request refused: {fault!r}", fault=error)
            return self._fault(error)
        # spyne failing on a request it should have refused: the client's input, not a fault
        # of ours
        self.log.info("soap: request refused, unreadable: {e!r}", e=error)
        return self._fault(Fault("Client.BadRequest", "the request cannot be read"))

    async def _answer(self, p_ctx: Any) -> tuple[int, dict[str, str], bytes]:
        """Call the method of a request read, and serialise what it returned or raised."""
        server = self._server
        if p_ctx.function is not None:
            p_ctx.function = _deferring(p_ctx.function)
        server.get_out_object(p_ctx)  # calls the method: the result is pending
        if p_ctx.out_error is None:
            try:
                await _settle(p_ctx)
            except Fault as fault:
                p_ctx.out_error = fault
                p_ctx.fire_event("method_exception_object")
        if p_ctx.out_error is not None:
            # A Fault the method raised, or one a spyne event handler raised before it ran.
            fault = p_ctx.out_error
            self.log.info("soap: {method} answered {fault!r}", method=_name(p_ctx), fault=fault)
            return self._fault(fault)
        written = p_ctx.out_object[0] if len(p_ctx.out_object or ()) == 1 else None
        if isinstance(written, Serialised):
            return 200, p_ctx.transport.resp_headers, written.body
        server.get_out_string(p_ctx)
        answer = b"".join(p_ctx.out_string)
        status = int(str(p_ctx.transport.resp_code or 200)[:3])
        return status, p_ctx.transport.resp_headers, answer

    def _fault(self, fault: Fault) -> tuple[int, dict[str, str], bytes]:
        """``fault`` serialised in a fresh context: whatever the failed one holds (a half
        serialised answer, say) cannot leak into it."""
        server = self._server
        ctx = _MethodContext(server, None, server.app.out_protocol.mime_type)
        try:
            ctx.out_error = fault
            server.get_out_string(ctx)
            status = int(str(ctx.out_protocol.fault_to_http_response_code(fault))[:3])
            return status, ctx.transport.resp_headers, b"".join(ctx.out_string)
        finally:
            ctx.close()

    def _send(
        self, answer: tuple[int, dict[str, str], bytes], request: Any, gone: list[Failure]
    ) -> None:
        if gone:
            # The client hung up while the method ran; writing now would raise.
            self.log.info("soap: client gone before the answer: {reason}", reason=gone[0].value)
            return
        status, headers, body = answer
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.encode("latin-1"), str(value).encode("latin-1"))
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _broken(self, failure: Failure, request: Any, gone: list[Failure]) -> None:
        """Not even a fault could be made (or sent): log it, and end the request rather
        than leave the client waiting."""
        self.log.failure("soap: {uri}: no answer could be sent", failure, uri=_uri(request))
        if gone or request.finished:
            return
        if not request.startedWriting:
            request.setResponseCode(500)
            request.setHeader(b"content-type", _TEXT)
            request.write(b"internal error\n")
        request.finish()


_SAFE_PARSER = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}


def _check_envelope(body: bytes, charset: str | None) -> None:
    """Refuse, as the client's fault, what spyne would choke on: a document type declaration
    (SOAP 1.1, section 3: a SOAP message must not contain one; entities come with it), an
    envelope without a Body holding exactly one element, or a Fault as the request.  A body
    that is no XML or no SOAP envelope at all is left to spyne, which says so."""
    try:
        if charset is not None:
            text = body.decode(charset)
            parser = etree.XMLParser(encoding="utf-8", **_SAFE_PARSER)
            root = etree.fromstring(text.encode("utf-8"), parser)
        else:
            root = etree.fromstring(body, etree.XMLParser(**_SAFE_PARSER))
    except (etree.XMLSyntaxError, ValueError):
        return  # spyne's Client.XMLSyntaxError says where
    if root is None:
        return
    doctype = root.getroottree().docinfo
    if doctype.doctype or doctype.internalDTD is not None or doctype.externalDTD is not None:
        raise Fault("Client.SoapError", "a SOAP message must not have a document type (DTD)")
    if root.tag != f"{{{SOAP11_ENV}}}Envelope":
        return  # spyne's Client.SoapError names the element it wants
    bodies = root.findall(f"{{{SOAP11_ENV}}}Body")
    if len(bodies) != 1:
        raise Fault("Client.SoapError", "the envelope needs exactly one Body")
    calls = [child for child in bodies[0] if isinstance(child.tag, str)]
    if len(calls) != 1 or (bodies[0].text or "").strip():
        raise Fault("Client.SoapError", "the Body must hold exactly one call (one element)")
    if calls[0].tag == f"{{{SOAP11_ENV}}}Fault":
        raise Fault("Client.SoapError", "a Fault is an answer, not a call")


def _media_type(request: Any) -> str:
    value = request.getHeader(b"content-type") or b""
    return value.decode("latin-1").partition(";")[0].strip().lower()


def _deferring(function: Any) -> Any:
    """``function`` as spyne will call it, but answering a Deferred whatever it does: an
    ``async def``'s coroutine is driven on the reactor, and an exception raised before it
    returns travels in the Deferred too.  So spyne never catches a method's exception
    (it would answer its fixed "Internal Error" and lose the traceback) and every
    outcome reaches :meth:`SoapResource._call` one way."""

    def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return maybeDeferred(function, *args, **kwargs)

    return call


async def _settle(ctx: Any) -> None:
    """Replace the pending result in ``ctx.out_object`` with its value.  spyne wraps a
    method's result in a list unless the method declares several return values; a
    service's own ``call_wrapper`` may also answer a coroutine of its own."""
    pending = ctx.out_object
    if _is_pending(pending):
        ctx.out_object = await pending
    elif isinstance(pending, list | tuple) and len(pending) == 1 and _is_pending(pending[0]):
        ctx.out_object = [await pending[0]]


def _is_pending(value: Any) -> bool:
    return isinstance(value, Deferred) or iscoroutine(value)


def _asks_wsdl(uri: bytes) -> bool:
    """``?wsdl``, ``?WSDL`` or ``?wsdl=...``; ``request.args`` will not do, Twisted drops
    a query parameter without ``=``."""
    query = uri.partition(b"?")[2]
    return any(part.partition(b"=")[0].lower() == b"wsdl" for part in query.split(b"&"))


def _charset(request: Any) -> str | None:
    value = request.getHeader(b"content-type")
    if value is None:
        return None
    message = Message()
    message["content-type"] = value.decode("latin-1")
    charset = message.get_content_charset()
    if charset is not None:
        "".encode(charset)  # LookupError now rather than deep inside spyne
    return charset


def _location(request: Any) -> str:
    """The URL this request came to, without its query: what the client can reach."""
    host = request.getHeader(b"host")
    if host is None or not _HOST.fullmatch(host):
        local = request.getHost()
        host = (f"[{local.host}]" if ":" in local.host else local.host).encode()
        host += b":%d" % local.port
    scheme = b"https" if request.isSecure() else b"http"
    return (scheme + b"://" + host + request.path).decode("ascii", "replace")


def _name(ctx: Any) -> str:
    return ctx.descriptor.name if ctx.descriptor is not None else "?"


def _uri(request: Any) -> str:
    return request.uri.decode("latin-1")


def _plain(request: Any, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", _TEXT)
    return text.encode() + b"\n"
