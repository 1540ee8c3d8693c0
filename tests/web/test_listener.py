"""The web listener's limits (sac.web.listener), in process with the real application: a
slowloris dribbling its headers or its body is cut at the deadline although every byte would
reset Twisted's idle timeout; connections beyond max_connections are closed at once; answers
name no server version.  The deadlines' tests run the listener's timers on a Clock, over an
in-memory transport (no time waited); the others on a real port of 127.0.0.1
(tests/web/test_web_slowloris.py cuts real dribblers against a real twistd)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from sac.services.metrics import Metrics
from sac.tap import MIN_WEB_CONNECTIONS, RESERVED_FILES, WEB_CONNECTIONS
from sac.web.listener import WebLimits, WebSite
from tests.acquisition.test_slow import Silent, until
from tests.promtext import metric
from tests.run.test_tap import config_for, start
from tests.store.conftest import Backend
from tests.web.conftest import make_site


class Dribble(Silent):
    """Sends ``head`` at once, then ``rest`` one byte every ``every`` seconds (well under the
    idle timeout), and notes what it got back."""

    def __init__(self, head: bytes, rest: bytes, every: float) -> None:
        super().__init__()
        self.head, self.rest, self.every = head, rest, every
        self.sent = 0
        self.received = b""
        self.loop = LoopingCall(self._byte)

    def connectionMade(self) -> None:
        self.transport.write(self.head)
        self.loop.start(self.every, now=False)

    def _byte(self) -> None:
        if self.sent < len(self.rest):
            self.transport.write(self.rest[self.sent : self.sent + 1])
            self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        if self.loop.running:
            self.loop.stop()
        super().connectionLost(reason)


async def serve(sqlite: Backend, limits: WebLimits) -> tuple[Any, Metrics, str]:
    site = await make_site(sqlite)
    metrics = site.web.metrics
    web = WebSite(site.web.resource(), limits, metrics, reactor=reactor)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(web)
    return port, metrics, f"http://127.0.0.1:{port.getHost().port}"


class Wire:
    """One connection to a :class:`WebSite` on an in-memory transport: bytes in by hand, the
    answer in :attr:`received`; cut (``abortConnection``) as the reactor would cut it."""

    def __init__(self, web: WebSite) -> None:
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        self.transport = StringTransport(peerAddress=peer)
        self.channel = web.buildProtocol(peer)
        self.channel.makeConnection(self.transport)
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)
        self.sent += len(data)

    @property
    def received(self) -> bytes:
        return self.transport.value()

    @property
    def cut(self) -> bool:
        """Reset by the listener (abortConnection), not closed at the end of an answer."""
        return self.transport.disconnected

    def lost(self) -> None:
        """The reactor's part once the transport is closed: the channel learns it."""
        reason = ConnectionAborted() if self.cut else ConnectionDone()
        self.channel.connectionLost(Failure(reason))


def on_clock(site: Any, limits: WebLimits) -> tuple[WebSite, Clock]:
    """The application behind a listener whose timers (deadlines, idle timeout) run on a
    Clock; the store and the application answer through the real reactor."""
    clock = Clock()
    return WebSite(site.web.resource(), limits, site.web.metrics, reactor=clock), clock


async def connect(port: Any, protocol: Protocol) -> Any:
    address = port.getHost()
    return await connectProtocol(TCP4ClientEndpoint(reactor, address.host, address.port), protocol)


HEADERS = b"GET /login HTTP/1.1\r\nHost: sac.test\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_a_slowloris_is_cut_at_the_header_and_body_deadlines(sqlite: Backend) -> None:
    # idle timeout 2 s, a byte every 0.125 s: only the deadlines can cut these, at 1 s
    limits = WebLimits(max_connections=50, header_timeout=1.0, body_timeout=1.0, idle_timeout=2)
    web, clock = on_clock(await make_site(sqlite), limits)
    head = (
        b"POST /login HTTP/1.1\r\nHost: sac.test\r\nContent-Length: 400\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    headers, body = Wire(web), Wire(web)
    body.send(head)
    dribbles = [(headers, HEADERS), (body, head + b"x" * 400)]
    while clock.seconds() < 1.0:
        assert not headers.cut and not body.cut, clock.seconds()  # not before the deadline
        clock.advance(0.125)
        for wire, whole in dribbles:
            if not wire.cut:
                wire.send(whole[wire.sent : wire.sent + 1])
    for wire, whole in dribbles:
        assert wire.cut  # a reset, at the deadline
        assert 0 < wire.sent < len(whole)  # still dribbling when cut
        assert wire.received == b""  # never answered
        wire.lost()
    assert web.metrics.value("sac_web_closed_total", reason="header-timeout") == 1
    assert web.metrics.value("sac_web_closed_total", reason="body-timeout") == 1
    assert web.metrics.value("sac_web_connections") == 0


@pytest_twisted.ensureDeferred
async def test_the_deadline_starts_again_with_each_request(sqlite: Backend) -> None:
    """Three requests on one connection, 1.25 s apart: the connection outlives the 2 s
    header deadline, each request is well within it; the next one's runs from the answer."""
    limits = WebLimits(header_timeout=2.0, body_timeout=2.0, idle_timeout=5)
    web, clock = on_clock(await make_site(sqlite), limits)
    keep = Wire(web)
    for answers in (1, 2, 3):
        if answers > 1:
            clock.advance(1.25)
        keep.send(HEADERS)
        await until(lambda n=answers: keep.received.count(b"HTTP/1.1 200") == n, "answer")
    assert not keep.transport.disconnecting
    assert web.metrics.total("sac_web_closed_total") == 0
    clock.advance(1.75)
    assert not keep.cut
    clock.advance(0.25)  # the fourth request's deadline: 2 s from the third answer
    assert keep.cut
    keep.lost()
    assert web.metrics.value("sac_web_closed_total", reason="header-timeout") == 1


@pytest_twisted.ensureDeferred
async def test_connections_beyond_max_connections_are_closed_at_once(sqlite: Backend) -> None:
    limits = WebLimits(max_connections=5, header_timeout=30, body_timeout=30)
    port, metrics, url = await serve(sqlite, limits)
    held: list[Silent] = []
    try:
        for _ in range(5):
            held.append(Silent())
            await connect(port, held[-1])
        await until(lambda: metrics.value("sac_web_connections") == 5, "5 connections")
        extra = Silent()
        await connect(port, extra)
        await extra.ended  # closed unserved, while the 5 are still held
        assert all(s.reason is None for s in held)
        assert metrics.value("sac_web_refused_total", reason="max-connections") == 1
        for s in held:
            s.transport.loseConnection()
        await until(lambda: metrics.value("sac_web_connections") == 0, "all closed")
        answer = await treq.get(f"{url}/login", persistent=False)
        assert answer.code == 200
        await answer.content()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_answers_name_no_server_version(sqlite: Backend) -> None:
    port, _metrics, url = await serve(sqlite, WebLimits())
    try:
        for path in ("/login", "/static/sac.css", "/no/such/page", "/soap?wsdl", "/health"):
            answer = await treq.get(url + path, persistent=False)
            await answer.content()
            assert answer.headers.getRawHeaders("server") is None, path
        # a request Twisted refuses itself (no resource sees it) says no version either
        raw = Dribble(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"", every=10)
        await connect(port, raw)
        await raw.ended
        assert raw.received.startswith(b"HTTP/1.1 400")
        assert b"Twisted" not in raw.received
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_each_answer_is_timed_by_part(sqlite: Backend) -> None:
    """``sac_web_request_seconds``: one observation per request answered, labelled with the
    part of the site it went to; the page reads as Prometheus reads it."""
    port, metrics, url = await serve(sqlite, WebLimits())
    try:
        paths = ["/login", "/login", "/static/sac.css", "/soap?wsdl", "/api/v1/meters"]
        for path in paths:
            await (await treq.get(url + path, persistent=False)).content()
        text = await (await treq.get(f"{url}/metrics", persistent=False)).text()
    finally:
        await port.stopListening()
    count = "sac_web_request_seconds_count"
    assert metric(text, count, part="pages") == 2  # /metrics itself is timed once answered
    assert metric(text, count, part="static") == metric(text, count, part="soap") == 1
    assert metric(text, count, part="api") == 1
    assert metric(text, "sac_web_request_seconds_sum", part="pages") > 0
    assert metrics.value(count, part="pages") == 3  # now /metrics too
    # the process' own figures, as Prometheus' default exporter gives them
    assert metric(text, "process_resident_memory_bytes") > 0


@pytest_twisted.ensureDeferred
async def test_the_service_computes_max_connections_from_the_open_files_limit(
    sqlite: Backend, tmp_path: Path
) -> None:
    config = config_for(sqlite, tmp_path, SAC_PUSH_MAX_SESSIONS="1000")
    service = await start(config)
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert service.web_connections == max(
            MIN_WEB_CONNECTIONS, min(WEB_CONNECTIONS, (soft - 1000 - RESERVED_FILES) // 2)
        )
        assert soft >= 1000 + RESERVED_FILES + service.web_connections  # it all fits
        shown = dict((name, value) for name, value, _ in service.web.configuration)
        assert shown["[web] max_connections"] == f"{service.web_connections} (computed)"
        web = f"http://127.0.0.1:{service.web_ports[0].getHost().port}"
        metrics = await (await treq.get(f"{web}/metrics", persistent=False)).text()
        assert "sac_web_connections 1" in metrics  # this request's
    finally:
        await service.stopService()
    service = await start(config_for(sqlite, tmp_path, SAC_WEB_MAX_CONNECTIONS="7"))
    try:
        assert service.web_connections == 7
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_requests_are_not_cut_while_they_are_served(sqlite: Backend) -> None:
    """Two requests sent at once, the store held past the deadline: the first waits for the
    store, the second waits in the connection's buffer; neither is the client's time, and
    both are answered once the store is back."""
    limits = WebLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=5)
    site = await make_site(sqlite)
    web, clock = on_clock(site, limits)
    browser = await site.signed_in("vera")
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    meters = f"GET /meters HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n\r\n".encode()
    release = sqlite.lock()  # the store's transactions wait (SQLite: up to 5 s)
    try:
        client = Wire(web)
        client.send(meters + meters)
        clock.advance(1.0)  # twice the deadline
        assert client.received == b"" and not client.transport.disconnecting
    finally:
        release()
    await until(lambda: client.received.count(b"HTTP/1.1 200") == 2, "both answers")
    assert not client.transport.disconnecting
    assert web.metrics.total("sac_web_closed_total") == 0
