"""Where the SAC listens for meters: configured as text, as operators write it.

Push sessions take a Twisted server endpoint string: ``tcp:4059:interface=0.0.0.0``, or
``ssl:4059:privateKey=key.pem:certKey=cert.pem`` for TLS (with ``extraCertChain=`` and
``dhParameters=`` when needed), or any other stream endpoint Twisted knows.  DATA-NOTIFICATION
datagrams take ``udp:4059`` or ``udp:4059:interface=ADDRESS``: Twisted has no UDP endpoint
strings, so that one small grammar is ours.  A description that does not parse, or names a
certificate that cannot be read, is a :class:`~sac.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

from sac.errors import ConfigurationError

__all__ = ["UdpAddress", "listen_datagrams", "listen_sessions", "stream_endpoint", "udp_address"]


def stream_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """The server endpoint of a Twisted endpoint string."""
    try:
        return serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        raise ConfigurationError(f"listener {description!r}: {exc}") from None
    except Exception as exc:  # OpenSSL's errors for a certificate or key it cannot use
        raise ConfigurationError(f"listener {description!r}: {type(exc).__name__}: {exc}") from None


async def listen_sessions(reactor: Any, description: str, factory: Any) -> IListeningPort:
    """Listen for push sessions (TCP, TLS...) as ``description`` says."""
    endpoint = stream_endpoint(reactor, description)
    try:
        return await endpoint.listen(factory)
    except Exception as exc:  # CannotListenError: the port is taken, the address is not ours
        raise ConfigurationError(f"listener {description!r}: {exc}") from None


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
