"""What xDLMS APDUs name and carry besides ``Data``: attribute and method descriptors,
selective access (by range, by entry), :data:`NO_VALUE`, and the small fields every APDU
module writes and reads (invoke-id-and-priority, u32, raw octets).

The APDUs are in :mod:`sac.dlms.xdlms` (which re-exports these names: callers import them
from there) and :mod:`sac.dlms.notification`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    Integer,
    Limits,
    LongUnsigned,
    OctetString,
    Structure,
    decode_ber_length,
    decode_data_at,
    encode_ber_length,
    encode_data,
    encoder,
)
from sac.dlms.obis import Obis
from sac.errors import DecodeError, EncodeError

__all__ = [
    "NO_VALUE",
    "AttributeDescriptor",
    "MethodDescriptor",
    "SelectiveAccess",
    "entry_descriptor",
    "range_descriptor",
]

_DESC = struct.Struct(">H6sb")
U32 = struct.Struct(">I")


class _NoValue:
    """The absence of an optional Data (distinct from null-data, which is ``None``)."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Any = _NoValue()


# --- descriptors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    class_id: int
    instance: Obis
    attribute: int

    @encoder
    def to_bytes(self) -> bytes:
        try:
            return _DESC.pack(self.class_id, bytes(self.instance), self.attribute)
        except struct.error as exc:
            raise EncodeError(f"bad attribute descriptor {self}: {exc}") from None

    @classmethod
    def decode_at(cls, buf: bytes, pos: int) -> tuple[AttributeDescriptor, int]:
        if pos + 9 > len(buf):
            raise DecodeError("truncated: attribute descriptor")
        class_id, ln, attr = _DESC.unpack_from(buf, pos)
        return cls(class_id, Obis(ln), attr), pos + 9


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    class_id: int
    instance: Obis
    method: int

    @encoder
    def to_bytes(self) -> bytes:
        try:
            return _DESC.pack(self.class_id, bytes(self.instance), self.method)
        except struct.error as exc:
            raise EncodeError(f"bad method descriptor {self}: {exc}") from None

    @classmethod
    def decode_at(cls, buf: bytes, pos: int) -> tuple[MethodDescriptor, int]:
        if pos + 9 > len(buf):
            raise DecodeError("truncated: method descriptor")
        class_id, ln, method = _DESC.unpack_from(buf, pos)
        return cls(class_id, Obis(ln), method), pos + 9


@dataclass(frozen=True, slots=True)
class SelectiveAccess:
    """Selective access: selector 1 = by range, 2 = by entry, and its parameters (Data)."""

    selector: int
    parameters: Any

    @encoder
    def to_bytes(self) -> bytes:
        if not 0 <= self.selector <= 255:
            raise EncodeError(f"access selector {self.selector} is not a byte")
        return b"\x01" + bytes((self.selector,)) + encode_data(self.parameters)


def range_descriptor(
    restricting: tuple[int, Obis | str, int, int],
    start: Any,
    end: Any,
    selected_values: tuple[tuple[int, Obis | str, int, int], ...] = (),
) -> SelectiveAccess:
    """Selector 1: capture-object definition {class, LN, attribute, data-index}, from, to."""

    def capture_object(c: tuple[int, Obis | str, int, int]) -> Structure:
        class_id, ln, attr, data_index = c
        return Structure(
            (
                LongUnsigned(class_id),
                OctetString(bytes(Obis(ln))),
                Integer(attr),
                LongUnsigned(data_index),
            )
        )

    return SelectiveAccess(
        1,
        Structure(
            (
                capture_object(restricting),
                start,
                end,
                Array(capture_object(c) for c in selected_values),
            )
        ),
    )


def entry_descriptor(
    from_entry: int, to_entry: int = 0, from_value: int = 1, to_value: int = 0
) -> SelectiveAccess:
    """Selector 2: entries from..to (to 0 = the last), columns from..to (to 0 = the last)."""
    return SelectiveAccess(
        2,
        Structure(
            (
                DoubleLongUnsigned(from_entry),
                DoubleLongUnsigned(to_entry),
                LongUnsigned(from_value),
                LongUnsigned(to_value),
            )
        ),
    )


# --- the small fields -----------------------------------------------------------------------


def access_at(buf: bytes, pos: int, limits: Limits) -> tuple[SelectiveAccess | None, int]:
    if pos >= len(buf):
        raise DecodeError("truncated: access-selection flag missing")
    flag = buf[pos]
    if flag == 0:
        return None, pos + 1
    if flag != 1 or pos + 2 > len(buf):
        raise DecodeError(f"bad access-selection flag 0x{flag:02x}")
    selector = buf[pos + 1]
    params, pos = decode_data_at(buf, pos + 2, limits)
    return SelectiveAccess(selector, params), pos


def access_bytes(access: SelectiveAccess | None) -> bytes:
    return b"\x00" if access is None else access.to_bytes()


def iip(value: int) -> bytes:
    if not 0 <= value <= 255:
        raise EncodeError(f"invoke-id-and-priority {value} is not a byte")
    return bytes((value,))


def octets(raw: bytes) -> bytes:
    return encode_ber_length(len(raw)) + raw


def octets_at(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, start = decode_ber_length(buf, pos)
    end = start + n
    if end > len(buf):
        raise DecodeError(f"truncated: raw data of {n} bytes, {len(buf) - start} left")
    return bytes(buf[start:end]), end


def u32_at(buf: bytes, pos: int) -> int:
    if pos + 4 > len(buf):
        raise DecodeError("truncated: u32 missing")
    value: int = U32.unpack_from(buf, pos)[0]
    return value


def u32(value: int) -> bytes:
    try:
        return U32.pack(value)
    except struct.error:
        raise EncodeError(f"{value} is not a u32") from None


def need(buf: bytes, n: int, what: str) -> None:
    if len(buf) < n:
        raise DecodeError(f"truncated: {what}")
