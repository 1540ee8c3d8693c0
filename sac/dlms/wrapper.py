"""The TCP-UDP/IP wrapper (IEC 62056-47): an 8-byte header in front of every APDU.

``version | source wPort | destination wPort | length`` (u16 big-endian each), then
``length`` bytes of APDU.  :class:`WrapperFramer` cuts a byte stream into PDUs, however the
reads fall: several PDUs in one read, or one PDU across many reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sac.errors import EncodeError, FramingError

__all__ = [
    "HEADER_SIZE",
    "WRAPPER_VERSION",
    "WrapperFramer",
    "WrapperPdu",
    "decode_wrapper",
    "encode_wrapper",
]

WRAPPER_VERSION = 1
HEADER_SIZE = 8
_HEADER = struct.Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class WrapperPdu:
    source: int
    destination: int
    apdu: bytes

    def to_bytes(self) -> bytes:
        return encode_wrapper(self.source, self.destination, self.apdu)


def encode_wrapper(source: int, destination: int, apdu: bytes) -> bytes:
    if not (0 <= source <= 0xFFFF and 0 <= destination <= 0xFFFF):
        raise EncodeError(f"wPorts must be 0..65535, not {source}/{destination}")
    if len(apdu) > 0xFFFF:
        raise EncodeError(f"an APDU of {len(apdu)} bytes does not fit in a wrapper PDU")
    return _HEADER.pack(WRAPPER_VERSION, source, destination, len(apdu)) + apdu


class WrapperFramer:
    """Incremental wrapper framing: ``feed(bytes) -> [WrapperPdu]``.

    ``max_apdu_length`` bounds the length a header may announce (checked on the header, before
    any body is buffered).  ``sources``/``destinations``, when given, are the wPorts this end
    accepts.  Any violation raises :class:`FramingError`; the stream cannot be trusted after
    that, so the caller drops the connection.
    """

    __slots__ = ("_broken", "_buf", "_destinations", "_max", "_sources")

    def __init__(
        self,
        max_apdu_length: int = 0xFFFF,
        *,
        sources: frozenset[int] | set[int] | None = None,
        destinations: frozenset[int] | set[int] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._max = max_apdu_length
        self._sources = frozenset(sources) if sources is not None else None
        self._destinations = frozenset(destinations) if destinations is not None else None
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a whole PDU."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[WrapperPdu]:
        if self._broken:
            raise FramingError("the stream is broken by an earlier framing error")
        buf = self._buf
        buf += data
        pdus: list[WrapperPdu] = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= HEADER_SIZE:
                version, source, destination, length = _HEADER.unpack_from(buf, pos)
                self._check(version, source, destination, length)
                end = pos + HEADER_SIZE + length
                if end > n:
                    break
                pdus.append(WrapperPdu(source, destination, bytes(buf[pos + HEADER_SIZE : end])))
                pos = end
        except FramingError:
            self._broken = True
            raise
        finally:
            if pos:
                del buf[:pos]
        return pdus

    def _check(self, version: int, source: int, destination: int, length: int) -> None:
        if version != WRAPPER_VERSION:
            raise FramingError(f"wrapper version {version} is not {WRAPPER_VERSION}")
        if length > self._max:
            raise FramingError(f"wrapper PDU of {length} bytes is over the limit of {self._max}")
        if self._sources is not None and source not in self._sources:
            raise FramingError(f"unexpected source wPort {source}")
        if self._destinations is not None and destination not in self._destinations:
            raise FramingError(f"unexpected destination wPort {destination}")


def decode_wrapper(data: bytes, max_apdu_length: int = 0xFFFF) -> WrapperPdu:
    """One whole datagram (UDP) holding exactly one wrapper PDU."""
    if len(data) < HEADER_SIZE:
        raise FramingError(f"a datagram of {len(data)} bytes is shorter than a wrapper header")
    version, source, destination, length = _HEADER.unpack_from(data)
    if version != WRAPPER_VERSION:
        raise FramingError(f"wrapper version {version} is not {WRAPPER_VERSION}")
    if length > max_apdu_length:
        raise FramingError(f"wrapper PDU of {length} bytes is over the limit of {max_apdu_length}")
    if length != len(data) - HEADER_SIZE:
        raise FramingError(
            f"the header announces {length} bytes, the datagram holds {len(data) - HEADER_SIZE}"
        )
    return WrapperPdu(source, destination, bytes(data[HEADER_SIZE:]))
