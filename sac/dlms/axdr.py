"""A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 / Green Book), and BER lengths.

The values are :mod:`sac.dlms.datatypes`' Python values that remember their DLMS type (the
table there); this module re-exports them, and callers import them from here.  Decoding is
bounded by :class:`Limits`; compact-arrays and compact frames use type descriptions and
values written without tags.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.datatypes import (
    FIXED_SIZES,
    INT_TYPES,
    SIMPLE_TAGS,
    Array,
    Bcd,
    BitString,
    CompactArray,
    DataTag,
    DoubleLong,
    DoubleLongUnsigned,
    Enum,
    Float32,
    Float64,
    Integer,
    Long,
    Long64,
    Long64Unsigned,
    LongUnsigned,
    OctetString,
    Structure,
    TypeDescription,
    TypedFloat,
    TypedInt,
    Unsigned,
    Utf8String,
    VisibleString,
)
from sac.errors import DecodeError, EncodeError

__all__ = [
    "INT_TYPES",
    "MALFORMED",
    "Array",
    "Bcd",
    "BitString",
    "CompactArray",
    "DataTag",
    "DoubleLong",
    "DoubleLongUnsigned",
    "Enum",
    "Float32",
    "Float64",
    "Integer",
    "Limits",
    "Long",
    "Long64",
    "Long64Unsigned",
    "LongUnsigned",
    "OctetString",
    "Structure",
    "TypeDescription",
    "Unsigned",
    "Utf8String",
    "VisibleString",
    "decode_ber_length",
    "decode_data",
    "decode_data_at",
    "decode_type_description",
    "decode_untagged",
    "encode_ber_length",
    "encode_data",
    "encode_untagged",
    "encoder",
    "type_description_of",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a decoder accepts from the wire."""

    max_depth: int = 32
    max_length: int = 1 << 20


DEFAULT_LIMITS = Limits()

# what the standard library raises on bytes that do not fit; the codec turns it into DecodeError
MALFORMED = (struct.error, IndexError, ValueError, OverflowError)

_T = TypeVar("_T")


def encoder(method: Callable[[_T], bytes]) -> Callable[[_T], bytes]:
    """For ``to_bytes`` methods: a field out of range raises EncodeError, nothing foreign."""

    @functools.wraps(method)
    def to_bytes(self: _T) -> bytes:
        try:
            return method(self)
        except (ValueError, OverflowError, struct.error, TypeError) as exc:
            raise EncodeError(f"cannot encode {type(self).__name__}: {exc}") from None

    return to_bytes


# --- BER length -----------------------------------------------------------------------------


def encode_ber_length(n: int) -> bytes:
    if n < 0x80:
        if n < 0:
            raise EncodeError(f"a length cannot be negative ({n})")
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return bytes((0x82, n >> 8, n & 0xFF))
    if n <= 0xFFFFFF:
        return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))
    if n <= 0xFFFFFFFF:
        return b"\x84" + n.to_bytes(4, "big")
    raise EncodeError(f"length {n} needs more than 4 bytes")


def decode_ber_length(buf: bytes, pos: int) -> tuple[int, int]:
    """The length at ``buf[pos]`` (1 byte, or 0x81..0x84 + 1..4 bytes), and the next position."""
    if pos >= len(buf):
        raise DecodeError("truncated: a length is missing")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first - 0x80
    if not 1 <= size <= 4:
        raise DecodeError(f"unsupported length form 0x{first:02x}")
    end = pos + 1 + size
    if end > len(buf):
        raise DecodeError("truncated: a long length is cut short")
    return int.from_bytes(buf[pos + 1 : end], "big"), end


# --- decoding -------------------------------------------------------------------------------

_Decoder = Callable[[bytes, int, int], tuple[Any, int]]


def _fixed(cls: type, fmt: struct.Struct) -> _Decoder:
    size = fmt.size
    unpack = fmt.unpack_from

    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        end = pos + size
        if end > len(buf):
            raise DecodeError(f"truncated: {cls.__name__} needs {size} bytes")
        return cls(unpack(buf, pos)[0]), end

    return decode


def _sized(buf: bytes, pos: int, name: str) -> tuple[int, int, int]:
    n, start = decode_ber_length(buf, pos)
    end = start + n
    if end > len(buf):
        raise DecodeError(f"truncated: {name} of {n} bytes, {len(buf) - start} left")
    return n, start, end


def _d_octets(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    _n, start, end = _sized(buf, pos, "octet-string")
    return OctetString(buf[start:end]), end


def _d_visible(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    _n, start, end = _sized(buf, pos, "visible-string")
    try:
        return VisibleString(buf[start:end].decode("latin-1")), end
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise DecodeError("bad visible-string") from exc


def _d_utf8(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    _n, start, end = _sized(buf, pos, "utf8-string")
    try:
        return Utf8String(buf[start:end].decode("utf-8")), end
    except UnicodeDecodeError as exc:
        raise DecodeError("utf8-string is not valid UTF-8") from exc


def _d_bits(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    nbits, start = decode_ber_length(buf, pos)
    end = start + (nbits + 7) // 8
    if end > len(buf):
        raise DecodeError(f"truncated: bit-string of {nbits} bits")
    if nbits == 0:
        return BitString(), end
    text = bin(int.from_bytes(buf[start:end], "big"))[2:].zfill((end - start) * 8)
    return BitString(text[:nbits]), end


def _d_bool(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(buf):
        raise DecodeError("truncated: boolean")
    return buf[pos] != 0, pos + 1


def _d_null(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return None, pos


def _d_date_time(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 12
    if end > len(buf):
        raise DecodeError("truncated: date-time needs 12 bytes")
    return CosemDateTime.from_bytes(buf[pos:end]), end


def _d_date(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 5
    if end > len(buf):
        raise DecodeError("truncated: date needs 5 bytes")
    return CosemDate.from_bytes(buf[pos:end]), end


def _d_time(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 4
    if end > len(buf):
        raise DecodeError("truncated: time needs 4 bytes")
    return CosemTime.from_bytes(buf[pos:end]), end


def _d_sequence(kind: type) -> _Decoder:
    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        if depth <= 0:
            raise DecodeError("data nested too deeply")
        count, pos = decode_ber_length(buf, pos)
        if count > len(buf) - pos:
            raise DecodeError(f"{kind.__name__} of {count} elements cannot fit in the bytes left")
        items: list[Any] = []
        append = items.append
        depth -= 1
        for _ in range(count):
            if pos >= len(buf):
                raise DecodeError(f"truncated: {kind.__name__} element missing")
            decoder = _DECODERS.get(buf[pos])
            if decoder is None:
                raise DecodeError(f"unknown data tag 0x{buf[pos]:02x}")
            value, pos = decoder(buf, pos + 1, depth)
            append(value)
        return kind(items), pos

    return decode


def _d_compact_array(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth <= 0:
        raise DecodeError("data nested too deeply")
    desc, pos = _decode_type_description(buf, pos, depth - 1)
    n, start, end = _sized(buf, pos, "compact-array contents")
    _check_budget(desc, n)
    values = []
    p = start
    while p < end:  # each element takes >= 1 byte; one running past ``end`` raises
        value, p = _decode_untagged(desc, buf, p, end, depth - 1)
        values.append(value)
    return CompactArray(desc, tuple(values)), end


_DECODERS: dict[int, _Decoder] = {
    DataTag.NULL: _d_null,
    DataTag.BOOLEAN: _d_bool,
    DataTag.BIT_STRING: _d_bits,
    DataTag.OCTET_STRING: _d_octets,
    DataTag.VISIBLE_STRING: _d_visible,
    DataTag.UTF8_STRING: _d_utf8,
    DataTag.DATE_TIME: _d_date_time,
    DataTag.DATE: _d_date,
    DataTag.TIME: _d_time,
    DataTag.COMPACT_ARRAY: _d_compact_array,
    DataTag.FLOAT32: _fixed(Float32, Float32.FMT),
    DataTag.FLOAT64: _fixed(Float64, Float64.FMT),
}
for _cls in INT_TYPES:
    _DECODERS[_cls.TAG] = _fixed(_cls, _cls.FMT)
_DECODERS[DataTag.ARRAY] = _d_sequence(Array)
_DECODERS[DataTag.STRUCTURE] = _d_sequence(Structure)


def decode_data_at(buf: bytes, pos: int = 0, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, int]:
    """Decode one tagged ``Data`` at ``buf[pos]``; return it and the position after it."""
    if pos >= len(buf):
        raise DecodeError("truncated: data is missing")
    if len(buf) > limits.max_length:
        raise DecodeError(f"data of {len(buf)} bytes is over the limit of {limits.max_length}")
    decoder = _DECODERS.get(buf[pos])
    if decoder is None:
        raise DecodeError(f"unknown data tag 0x{buf[pos]:02x}")
    try:
        return decoder(buf, pos + 1, limits.max_depth)
    except MALFORMED as exc:
        raise DecodeError(f"malformed data: {exc}") from None


def decode_data(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode ``buf``, which must hold exactly one tagged ``Data``."""
    value, end = decode_data_at(buf, 0, limits)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} bytes left after the data")
    return value


# --- type descriptions and untagged values (compact-array, compact frames) ------------------


def decode_type_description(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> TypeDescription:
    """Decode a whole type description (e.g. IC 62 template_description)."""
    try:
        desc, end = _decode_type_description(buf, 0, limits.max_depth)
    except MALFORMED as exc:
        raise DecodeError(f"malformed type description: {exc}") from None
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} bytes left after the type description")
    return desc


def _decode_type_description(buf: bytes, pos: int, depth: int) -> tuple[TypeDescription, int]:
    if depth <= 0:
        raise DecodeError("type description nested too deeply")
    if pos >= len(buf):
        raise DecodeError("truncated: type description")
    tag = buf[pos]
    pos += 1
    if tag == DataTag.ARRAY:
        if pos + 2 > len(buf):
            raise DecodeError("truncated: array type description")
        count = (buf[pos] << 8) | buf[pos + 1]
        element, pos = _decode_type_description(buf, pos + 2, depth - 1)
        return TypeDescription(tag, count, (element,)), pos
    if tag == DataTag.STRUCTURE:
        count, pos = decode_ber_length(buf, pos)
        if count > len(buf) - pos:
            raise DecodeError(f"structure of {count} members cannot fit")
        members = []
        for _ in range(count):
            member, pos = _decode_type_description(buf, pos, depth - 1)
            members.append(member)
        return TypeDescription(tag, count, tuple(members)), pos
    if tag not in _UNTAGGED_DECODERS:
        raise DecodeError(f"unknown data type {tag} in a type description")
    return TypeDescription(tag), pos


def encode_type_description(desc: TypeDescription) -> bytes:
    if desc.tag == DataTag.ARRAY:
        if not 0 <= desc.count <= 0xFFFF or len(desc.elements) != 1:
            raise EncodeError("an array type description has one element type and a u16 count")
        return b"\x01" + desc.count.to_bytes(2, "big") + encode_type_description(desc.elements[0])
    if desc.tag == DataTag.STRUCTURE:
        return (
            b"\x02"
            + encode_ber_length(len(desc.elements))
            + b"".join(encode_type_description(e) for e in desc.elements)
        )
    return bytes((desc.tag,))


def _decode_untagged(
    desc: TypeDescription, buf: bytes, pos: int, end: int, depth: int
) -> tuple[Any, int]:
    tag = desc.tag
    if tag == DataTag.STRUCTURE or tag == DataTag.ARRAY:
        if depth <= 0:
            raise DecodeError("data nested too deeply")
        items = []
        if tag == DataTag.STRUCTURE:
            for member in desc.elements:
                value, pos = _decode_untagged(member, buf, pos, end, depth - 1)
                items.append(value)
            return Structure(items), pos
        element = desc.elements[0]
        if desc.count * _min_size(element) > end - pos:
            raise DecodeError(f"array of {desc.count} elements cannot fit")
        for _ in range(desc.count):
            value, pos = _decode_untagged(element, buf, pos, end, depth - 1)
            items.append(value)
        return Array(items), pos
    value, pos = _UNTAGGED_DECODERS[tag](buf, pos, depth)
    if pos > end:
        raise DecodeError("truncated: value runs past its contents")
    return value, pos


def decode_untagged(desc: TypeDescription, buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one value of type ``desc`` written without tags (compact encoding)."""
    _check_value_count(desc)
    try:
        return _decode_untagged(desc, buf, pos, len(buf), DEFAULT_LIMITS.max_depth)
    except MALFORMED as exc:
        raise DecodeError(f"malformed compact data: {exc}") from None


# a compact-array, or an untagged value, may not stand for more values than this
MAX_COMPACT_VALUES = 1 << 18


def _min_size(desc: TypeDescription) -> int:
    """The fewest bytes a value of ``desc`` takes without tags (strings: their length byte)."""
    if desc.tag == DataTag.STRUCTURE:
        return sum(_min_size(e) for e in desc.elements)
    if desc.tag == DataTag.ARRAY:
        return desc.count * _min_size(desc.elements[0])
    if desc.tag == DataTag.NULL:
        return 0
    return FIXED_SIZES.get(desc.tag, 1)


def _value_count(desc: TypeDescription) -> int:
    """How many Python values one value of ``desc`` becomes (containers included)."""
    if desc.tag == DataTag.STRUCTURE:
        return 1 + sum(_value_count(e) for e in desc.elements)
    if desc.tag == DataTag.ARRAY:
        return 1 + desc.count * _value_count(desc.elements[0])
    return 1


def _check_value_count(desc: TypeDescription) -> int:
    """How many values one value of ``desc`` becomes; refuses more than the budget."""
    count = _value_count(desc)
    if count > MAX_COMPACT_VALUES:
        raise DecodeError(f"a value of this type would hold more than {MAX_COMPACT_VALUES} values")
    return count


def _check_budget(desc: TypeDescription, length: int) -> None:
    """Refuse, before decoding a compact-array, what would repeat for ever or explode.

    Elements that take no bytes (null, empty structures) would repeat for ever; nested arrays
    ask for billions of values from a few bytes.
    """
    count = _check_value_count(desc)
    size = _min_size(desc)
    if size == 0:
        if length:
            raise DecodeError("compact data of elements that take no bytes")
        return
    if (length // size) * count > MAX_COMPACT_VALUES:
        raise DecodeError(f"compact data would hold more than {MAX_COMPACT_VALUES} values")


_UNTAGGED_DECODERS: dict[int, _Decoder] = {tag: _DECODERS[tag] for tag in SIMPLE_TAGS}


# --- encoding -------------------------------------------------------------------------------

_Encoder = Callable[[Any], bytes]


def _e_int(value: TypedInt) -> bytes:
    return value.FMT.pack(value)


def _e_float(value: TypedFloat) -> bytes:
    return value.FMT.pack(value)


def _e_bytes(value: bytes) -> bytes:
    return encode_ber_length(len(value)) + value


def _e_visible(value: str) -> bytes:
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{value!r} is not a visible-string (use Utf8String)") from exc
    return encode_ber_length(len(raw)) + raw


def _e_utf8(value: str) -> bytes:
    raw = value.encode("utf-8")
    return encode_ber_length(len(raw)) + raw


def _e_bits(value: str) -> bytes:
    n = len(value)
    padded = value + "0" * (-n % 8)
    raw = int(padded, 2).to_bytes(len(padded) // 8, "big") if n else b""
    return encode_ber_length(n) + raw


def _e_bool(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def _e_null(value: None) -> bytes:
    return b""


def _e_cosem(value: CosemDateTime | CosemDate | CosemTime) -> bytes:
    return value.to_bytes()


def _e_sequence(value: tuple[Any, ...] | list[Any]) -> bytes:
    return encode_ber_length(len(value)) + b"".join(map(encode_data, value))


def _e_compact_array(value: CompactArray) -> bytes:
    if value.values and _min_size(value.element_type) == 0:
        raise EncodeError("a compact-array of elements that take no bytes cannot be decoded")
    body = b"".join(encode_untagged(value.element_type, v) for v in value.values)
    return encode_type_description(value.element_type) + encode_ber_length(len(body)) + body


# type -> (tag, encoder of the contents)
_ENCODERS: dict[type, tuple[int, _Encoder]] = {
    type(None): (DataTag.NULL, _e_null),
    bool: (DataTag.BOOLEAN, _e_bool),
    bytes: (DataTag.OCTET_STRING, _e_bytes),
    OctetString: (DataTag.OCTET_STRING, _e_bytes),
    str: (DataTag.VISIBLE_STRING, _e_visible),
    VisibleString: (DataTag.VISIBLE_STRING, _e_visible),
    Utf8String: (DataTag.UTF8_STRING, _e_utf8),
    BitString: (DataTag.BIT_STRING, _e_bits),
    Float32: (DataTag.FLOAT32, _e_float),
    Float64: (DataTag.FLOAT64, _e_float),
    CosemDateTime: (DataTag.DATE_TIME, _e_cosem),
    CosemDate: (DataTag.DATE, _e_cosem),
    CosemTime: (DataTag.TIME, _e_cosem),
    Array: (DataTag.ARRAY, _e_sequence),
    list: (DataTag.ARRAY, _e_sequence),
    Structure: (DataTag.STRUCTURE, _e_sequence),
    tuple: (DataTag.STRUCTURE, _e_sequence),
    CompactArray: (DataTag.COMPACT_ARRAY, _e_compact_array),
}
for _cls in INT_TYPES:
    _ENCODERS[_cls] = (_cls.TAG, _e_int)


def _lookup(value: Any) -> tuple[int, _Encoder]:
    entry = _ENCODERS.get(type(value))
    if entry is None:
        if isinstance(value, int | float):
            raise EncodeError(
                f"plain {type(value).__name__} {value!r} has no DLMS width: "
                "wrap it (Unsigned, LongUnsigned, DoubleLong, Float32, ...)"
            )
        raise EncodeError(f"{type(value).__name__} is not a DLMS data type")
    return entry


def encode_data(value: Any) -> bytes:
    """The tagged A-XDR encoding of ``value``."""
    tag, encoder = _lookup(value)
    return bytes((tag,)) + encoder(value)


def type_description_of(value: Any) -> TypeDescription:
    """The type description of a value (arrays take their first element's type)."""
    tag, _ = _lookup(value)
    if tag == DataTag.STRUCTURE:
        members = tuple(type_description_of(v) for v in value)
        return TypeDescription(tag, len(members), members)
    if tag == DataTag.ARRAY:
        if not value:
            raise EncodeError("cannot describe the element type of an empty array")
        return TypeDescription(tag, len(value), (type_description_of(value[0]),))
    return TypeDescription(tag)


def encode_untagged(desc: TypeDescription, value: Any) -> bytes:
    """Encode ``value`` as type ``desc`` without tags (compact encoding)."""
    if desc.tag in (DataTag.STRUCTURE, DataTag.ARRAY):
        parts = desc.elements if desc.tag == DataTag.STRUCTURE else desc.elements * desc.count
        if len(parts) != len(value):
            raise EncodeError(f"expected {len(parts)} elements, got {len(value)}")
        return b"".join(encode_untagged(d, v) for d, v in zip(parts, value, strict=True))
    tag, encoder = _lookup(value)
    if tag != desc.tag:
        raise EncodeError(f"value {value!r} does not match data type {desc.tag}")
    return encoder(value)
