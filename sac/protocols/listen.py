"""Where the SAC listens for meters: configured as text, as operators write it.

Push sessions take a Twisted server endpoint string: ``tcp:4059:interface=0.0.0.0``, or
``ssl:4059:privateKey=key.pem:certKey=cert.pem`` for TLS (with ``extraCertChain=`` and
``dhParameters=`` when needed), or any other stream endpoint Twisted knows.  ``ssl:`` is parsed
here, with Twisted's grammar and keywords, so that the certificate and key reach OpenSSL as
``cryptography`` objects (Twisted's own ``ssl:`` parser hands pyOpenSSL the ``X509``/``PKey``
objects it deprecates).  DATA-NOTIFICATION
datagrams take ``udp:4059`` or ``udp:4059:interface=ADDRESS``: Twisted has no UDP endpoint
strings, so that one small grammar is ours.  A description that does not parse, or names a
certificate that cannot be read, is a :class:`~sac.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

from sac.errors import ConfigurationError

__all__ = ["UdpAddress", "listen_datagrams", "listen_sessions", "stream_endpoint", "udp_address"]


def stream_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """The server endpoint of a Twisted endpoint string."""
    try:
        if description.partition(":")[0] == "ssl":
            return _tls_endpoint(reactor, description)
        return serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        raise ConfigurationError(f"listener {description!r}: {exc}") from None
    except Exception as exc:  # OpenSSL's errors for a certificate or key it cannot use
        raise ConfigurationError(f"listener {description!r}: {type(exc).__name__}: {exc}") from None


_TLS_KEYWORDS = frozenset(
    {"privateKey", "certKey", "extraCertChain", "dhParameters", "sslmethod", "interface", "backlog"}
)


def _fields(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's endpoint grammar: fields split at ``:``, ``\\`` escapes the next character;
    ``key=value`` fields are keywords, the others positional."""
    fields, field, escaped = [], [], False
    for char in description:
        if escaped:
            field.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
    fields.append("".join(field))
    positional, keywords = [], {}
    for item in fields[1:]:
        key, equals, value = item.partition("=")
        if equals:
            keywords[key] = value
        else:
            positional.append(item)
    return positional, keywords


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None


def _tls_endpoint(reactor: Any, description: str) -> SSL4ServerEndpoint:
    """``ssl:PORT:privateKey=KEY[:certKey=CERT][:extraCertChain=CHAIN][:dhParameters=DH]
    [:sslmethod=METHOD][:interface=ADDRESS][:backlog=N]``, as Twisted's ``ssl:`` reads it."""
    from twisted.internet.ssl import CertificateOptions

    positional, keywords = _fields(description)
    unknown = sorted(set(keywords) - _TLS_KEYWORDS)
    if unknown or len(positional) != 1:
        raise ValueError(
            f"expected ssl:PORT:privateKey=KEY:certKey=CERT, with only "
            f"{', '.join(sorted(_TLS_KEYWORDS))} as keywords"
            + (f" (not {', '.join(unknown)})" if unknown else "")
        )
    port = int(positional[0])
    key, certificate, chain = _tls_credentials(keywords)
    context = CertificateOptions(
        privateKey=key, certificate=certificate, extraCertChain=chain, **_tls_options(keywords)
    )
    context.getContext()  # a key that does not match its certificate is said here, at start
    return SSL4ServerEndpoint(
        reactor,
        port,
        context,
        backlog=int(keywords.get("backlog", 50)),
        interface=keywords.get("interface", ""),
    )


def _tls_credentials(keywords: dict[str, str]) -> tuple[Any, x509.Certificate, Any]:
    """The private key, its certificate and the chain beyond it (None: none), read from the
    files ``privateKey``, ``certKey`` (default: the key's file) and ``extraCertChain``."""
    key_file = keywords.get("privateKey", "server.pem")
    cert_file = keywords.get("certKey", key_file)
    try:
        key = load_pem_private_key(_read(key_file, "private key"), password=None)
    except ValueError as exc:
        raise ValueError(f"private key {key_file}: {exc}") from None
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert_file, "certificate"))
    except ValueError as exc:
        raise ValueError(f"certificate {cert_file}: {exc}") from None
    chain = None
    if "extraCertChain" in keywords:
        chain_file = keywords["extraCertChain"]
        try:
            chain = x509.load_pem_x509_certificates(_read(chain_file, "certificate chain"))
        except ValueError as exc:
            raise ValueError(f"certificate chain {chain_file}: {exc}") from None
    return key, certificate, chain


def _tls_options(keywords: dict[str, str]) -> dict[str, Any]:
    """CertificateOptions' ``method`` and ``dhParameters``, when the description names them."""
    from OpenSSL import SSL
    from twisted.internet.ssl import DiffieHellmanParameters
    from twisted.python.filepath import FilePath

    options: dict[str, Any] = {}
    if "sslmethod" in keywords:
        options["method"] = getattr(SSL, keywords["sslmethod"])
    if "dhParameters" in keywords:
        options["dhParameters"] = DiffieHellmanParameters.fromFile(
            FilePath(keywords["dhParameters"])
        )
    return options


async def listen_sessions(
    reactor: Any, description: str, factory: Any, *, reset_on_death: bool = False
) -> IListeningPort:
    """Listen for sessions (TCP, TLS...) as ``description`` says.

    ``reset_on_death`` (the push listener): the listening socket gets SO_LINGER 0, which every
    connection the kernel accepts on it inherits from its first instant.  The push protocol
    sets it again on its connection and lifts it once the push is stored; what this closes is
    the gap between the kernel's ``accept()`` and the protocol's ``connectionMade``: a SAC
    killed there used to close that connection with a FIN, which the meter reads as "stored"."""
    endpoint = stream_endpoint(reactor, description)
    try:
        port = await endpoint.listen(factory)
    except Exception as exc:  # CannotListenError: the port is taken, the address is not ours
        raise ConfigurationError(f"listener {description!r}: {exc}") from None
    sock = getattr(port, "socket", None)
    if reset_on_death and isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return port


@dataclass(frozen=True, slots=True)
class UdpAddress:
    port: int
    interface: str = ""


def udp_address(description: str) -> UdpAddress:
    """``udp:PORT`` or ``udp:PORT:interface=ADDRESS``."""
    kind, _, rest = description.partition(":")
    parts = rest.split(":", 1) if rest else []
    if kind != "udp" or not parts:
        raise ConfigurationError(
            f"UDP listener {description!r}: expected udp:PORT or udp:PORT:interface=ADDRESS"
        )
    try:
        port = int(parts[0])
    except ValueError:
        raise ConfigurationError(f"UDP listener {description!r}: bad port {parts[0]!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"UDP listener {description!r}: port {port} out of range")
    interface = ""
    if len(parts) == 2:
        key, _, value = parts[1].partition("=")
        if key != "interface" or not value:
            raise ConfigurationError(
                f"UDP listener {description!r}: only interface=ADDRESS may follow the port"
            )
        interface = value
    return UdpAddress(port, interface)


def listen_datagrams(reactor: Any, description: str, protocol: Any) -> IListeningPort:
    """Listen for DATA-NOTIFICATION datagrams as ``description`` says."""
    address = udp_address(description)
    try:
        return reactor.listenUDP(address.port, protocol, interface=address.interface)
    except Exception as exc:
        raise ConfigurationError(f"UDP listener {description!r}: {exc}") from None
