"""The listeners as operators configure them: endpoint strings for push sessions (TLS
included) and the UDP description; a bad one is a clear ConfigurationError."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater

from sac.dlms import Obis
from sac.errors import ConfigurationError
from sac.protocols.listen import listen_datagrams, listen_sessions, udp_address
from sac.services.push import PushDatagramProtocol
from sac.store import Actor, CommandState
from tests.acquisition.conftest import Backend, Sac, push_once, started
from tests.acquisition.test_faults import push_bytes

INDEX = Obis("7.0.13.2.0.255")
OPERATOR = Actor("olivia", "192.0.2.9")
HOST = "sac.test"


def certificate(folder: Path) -> tuple[Path, Path, bytes]:
    """A self-signed server certificate for ``HOST``: (key file, certificate file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "cert.pem").write_bytes(pem)
    return folder / "key.pem", folder / "cert.pem", pem


def tls_to(port: int, pem: bytes) -> object:
    options = optionsForClientTLS(HOST, trustRoot=Certificate.loadPEM(pem))
    return wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))


@pytest_twisted.ensureDeferred
async def test_push_sessions_over_tls_store_and_run_commands(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    store, fleet, sac, _plain = await started(backend, sacs)
    [m] = fleet.meters
    folder = tmp_path / "tls:here"  # a colon in a path is escaped, as in Twisted's grammar
    folder.mkdir()
    _key, _cert, pem = certificate(folder)
    escaped = str(folder).replace(":", "\\:")
    port = await listen_sessions(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={escaped}/key.pem:certKey={escaped}/cert.pem"
        f":extraCertChain={escaped}/cert.pem",
        sac.factory,
    )
    try:
        number = port.getHost().port
        # a meter speaking plain TCP to the TLS port: its connection ends, nothing is stored
        await push_once(number, m)
        assert await store.readings.last(m.ldn, INDEX) == []
        # over TLS: stored, and a queued valve close runs in the same session
        command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR)
        protocol = await push_once(number, m, endpoint=tls_to(number, pem))
        assert protocol.end_reason.check(ConnectionDone)
        [reading] = await store.readings.last(m.ldn, INDEX)
        assert reading.value == m.index_litres
        done = await store.commands.get(command.id)
        assert done is not None and done.state is CommandState.DONE
        assert m.valve_state == 0
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_tls_client_that_does_not_trust_the_sac_stores_nothing(
    backend: Backend, sacs: list[Sac], tmp_path: Path
) -> None:
    store, fleet, sac, _plain = await started(backend, sacs)
    [m] = fleet.meters
    key, cert, _pem = certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _k, _c, stranger = certificate(other)
    port = await listen_sessions(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", sac.factory
    )
    try:
        number = port.getHost().port
        refused = await push_once(number, m, endpoint=tls_to(number, stranger))
        assert not refused.end_reason.check(ConnectionDone)
        assert await store.readings.last(m.ldn, INDEX) == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_datagrams_arrive_on_the_described_udp_port(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, _plain = await started(backend, sacs)
    [m] = fleet.meters
    listener = listen_datagrams(
        reactor, "udp:0:interface=127.0.0.1", PushDatagramProtocol(sac.acquisition)
    )
    sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        sender.write(push_bytes(m), ("127.0.0.1", listener.getHost().port))
        for _ in range(200):
            if await store.readings.last(m.ldn, INDEX):
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert await store.readings.last(m.ldn, INDEX)
    finally:
        await listener.stopListening()
        await sender.stopListening()


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ("udp:", "expected udp:PORT"),
        ("tcp4:1:interface=::", "udp:"),
        ("udp:x", "bad port 'x'"),
        ("udp:70000", "out of range"),
        ("udp:4059:backlog=5", "only interface=ADDRESS"),
    ],
)
def test_a_bad_udp_description_is_named(description: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        udp_address(description)


@pytest_twisted.ensureDeferred
async def test_a_bad_stream_description_is_a_configuration_error(tmp_path: Path) -> None:
    factory = type("F", (), {})()
    for description, message in [
        ("nosuch:4059", "nosuch"),
        ("tcp:port", "port"),
        (f"ssl:0:privateKey={tmp_path}/missing.pem", "missing.pem"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            await listen_sessions(reactor, description, factory)


@pytest_twisted.ensureDeferred
async def test_a_bad_tls_description_names_what_is_wrong(tmp_path: Path) -> None:
    factory = type("F", (), {})()
    key, cert, _pem = certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    other_key, _c, _p = certificate(other)
    for description, message in [
        (f"ssl:0:privateKey={other_key}:certKey={cert}", "key values mismatch"),
        (f"ssl:0:privateKey={key}:certKey={key}", f"certificate {key}"),
        (f"ssl:0:privateKey={cert}:certKey={cert}", f"private key {cert}"),
        (f"ssl:0:privateKey={key}:certKey={cert}:colour=blue", "not colour"),
        (f"ssl:0:privateKey={key}:certKey={cert}:extraCertChain={key}", "chain"),
        (f"ssl:privateKey={key}:certKey={cert}", "expected ssl:PORT"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            await listen_sessions(reactor, description, factory)


@pytest_twisted.ensureDeferred
async def test_a_port_already_taken_is_a_configuration_error_naming_it() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        number = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=str(number)):
            await listen_sessions(reactor, f"tcp:{number}:interface=127.0.0.1", Protocol)
    finally:
        taken.close()


def test_linger_reaches_the_socket_under_a_tls_wrapper() -> None:
    """SO_LINGER 0 until stored (a dead SAC resets, never acknowledges) holds under TLS too:
    the TLS transport's handle is an OpenSSL connection, the socket is one level down."""
    import struct

    from sac.protocols.push import _linger

    class Tcp:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def getHandle(self) -> socket.socket:
            return self.sock

    class Tls:
        def __init__(self, transport: Tcp) -> None:
            self.transport = transport

        def getHandle(self) -> object:
            return object()  # what TLSMemoryBIOProtocol gives: not a socket

    with socket.socket() as sock:
        _linger(Tls(Tcp(sock)), reset=True)
        assert struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (
            1,
            0,
        )
        _linger(Tls(Tcp(sock)), reset=False)
        assert struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))[0] == 0
    _linger(object(), reset=True)  # a test transport: nothing to do, no error


@pytest_twisted.ensureDeferred
async def test_a_push_listener_resets_connections_its_process_never_got_to() -> None:
    """A push listener's socket has SO_LINGER 0, and the kernel gives it to each connection it
    accepts: a SAC killed between the kernel's accept() and the protocol's connectionMade
    (which sets it too) resets that connection; it used to close it with a FIN, which the meter
    reads as "stored".  A web listener keeps the default."""
    import struct

    class Bare(Protocol):  # sets nothing on its socket
        def connectionMade(self) -> None:
            handle = self.transport.getHandle()
            linger.callback(
                struct.unpack("ii", handle.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
            )

    for reset, expected in [(True, (1, 0)), (False, (0, 0))]:
        linger: Deferred[tuple[int, int]] = Deferred()
        factory = Factory.forProtocol(Bare)
        port = await listen_sessions(
            reactor, "tcp:0:interface=127.0.0.1", factory, reset_on_death=reset
        )
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        try:
            assert await linger == expected
        finally:
            client.close()
            await port.stopListening()
