"""COSEM ``Data`` as Python values that remember their DLMS type (IEC 62056-6-2).

Decoded values are Python values that remember their DLMS type, so that encoding gives the
same bytes back:

=====================  ======================================================
DLMS type (tag)        Python value
=====================  ======================================================
null-data (0)          ``None``
array (1)              :class:`Array` (a tuple)
structure (2)          :class:`Structure` (a tuple)
boolean (3)            ``bool``
bit-string (4)         :class:`BitString` (a str of ``0``/``1``)
integers (5,6,15-18,   :class:`DoubleLong`, :class:`DoubleLongUnsigned`, :class:`Integer`,
20,21), enum (22),     :class:`Long`, :class:`Unsigned`, :class:`LongUnsigned`,
bcd (13)               :class:`Long64`, :class:`Long64Unsigned`, :class:`Enum`, :class:`Bcd`
                       (all ``int`` subclasses)
octet-string (9)       :class:`OctetString` (``bytes``); plain ``bytes`` encodes as one
visible-string (10)    :class:`VisibleString` (``str``); plain ``str`` encodes as one
utf8-string (12)       :class:`Utf8String` (``str``)
float32/64 (23, 24)    :class:`Float32`, :class:`Float64` (``float`` subclasses)
date-time/date/time    :class:`~sac.dlms.cosemtime.CosemDateTime`, ``CosemDate``,
(25, 26, 27)           ``CosemTime``
compact-array (19)     :class:`CompactArray`
=====================  ======================================================

Plain ``int`` and ``float`` are refused by the encoder (their width is ambiguous); plain
``list`` encodes as an array and plain ``tuple`` as a structure.

:mod:`sac.dlms.axdr` encodes and decodes them (and re-exports them: callers import them from
there).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from sac.errors import DecodeError, EncodeError

__all__ = [
    "FIXED_SIZES",
    "INT_TYPES",
    "SIMPLE_TAGS",
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
    "Long",
    "Long64",
    "Long64Unsigned",
    "LongUnsigned",
    "OctetString",
    "Structure",
    "TypeDescription",
    "TypedFloat",
    "TypedInt",
    "Unsigned",
    "Utf8String",
    "VisibleString",
]


class DataTag:
    """The A-XDR tags of ``Data`` (Green Book)."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27


# the types a type description names by their tag alone (every one but array, structure and
# compact-array): the values of compact-arrays and compact frames
SIMPLE_TAGS: frozenset[int] = frozenset(
    tag
    for name, tag in vars(DataTag).items()
    if name.isupper() and tag not in (DataTag.ARRAY, DataTag.STRUCTURE, DataTag.COMPACT_ARRAY)
)

# the bytes a value of each fixed-width type takes without its tag
FIXED_SIZES: dict[int, int] = {
    DataTag.BOOLEAN: 1,
    DataTag.INTEGER: 1,
    DataTag.UNSIGNED: 1,
    DataTag.ENUM: 1,
    DataTag.BCD: 1,
    DataTag.LONG: 2,
    DataTag.LONG_UNSIGNED: 2,
    DataTag.DOUBLE_LONG: 4,
    DataTag.DOUBLE_LONG_UNSIGNED: 4,
    DataTag.FLOAT32: 4,
    DataTag.LONG64: 8,
    DataTag.LONG64_UNSIGNED: 8,
    DataTag.FLOAT64: 8,
    DataTag.DATE_TIME: 12,
    DataTag.DATE: 5,
    DataTag.TIME: 4,
}


# --- typed values ---------------------------------------------------------------------------


class TypedInt(int):
    """An integer of one DLMS type: its tag, its big-endian format and its range."""

    TAG: ClassVar[int]
    FMT: ClassVar[struct.Struct]
    LOW: ClassVar[int]
    HIGH: ClassVar[int]

    def __new__(cls, value: int = 0) -> Any:
        self = int.__new__(cls, value)
        if not cls.LOW <= self <= cls.HIGH:
            raise EncodeError(f"{cls.__name__} {int(self)} is not in {cls.LOW}..{cls.HIGH}")
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


def _int_type(name: str, tag: int, fmt: str, signed: bool) -> type[TypedInt]:
    s = struct.Struct(">" + fmt)
    bits = s.size * 8
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return type(
        name, (TypedInt,), {"TAG": tag, "FMT": s, "LOW": low, "HIGH": high, "__slots__": ()}
    )


Integer = _int_type("Integer", DataTag.INTEGER, "b", True)
Long = _int_type("Long", DataTag.LONG, "h", True)
DoubleLong = _int_type("DoubleLong", DataTag.DOUBLE_LONG, "i", True)
Long64 = _int_type("Long64", DataTag.LONG64, "q", True)
Unsigned = _int_type("Unsigned", DataTag.UNSIGNED, "B", False)
LongUnsigned = _int_type("LongUnsigned", DataTag.LONG_UNSIGNED, "H", False)
DoubleLongUnsigned = _int_type("DoubleLongUnsigned", DataTag.DOUBLE_LONG_UNSIGNED, "I", False)
Long64Unsigned = _int_type("Long64Unsigned", DataTag.LONG64_UNSIGNED, "Q", False)
Enum = _int_type("Enum", DataTag.ENUM, "B", False)
Bcd = _int_type("Bcd", DataTag.BCD, "B", False)
INT_TYPES: tuple[type[TypedInt], ...] = (
    Integer,
    Long,
    DoubleLong,
    Long64,
    Unsigned,
    LongUnsigned,
    DoubleLongUnsigned,
    Long64Unsigned,
    Enum,
    Bcd,
)


class TypedFloat(float):
    """A float of one DLMS type: its tag and its big-endian format."""

    TAG: ClassVar[int]
    FMT: ClassVar[struct.Struct]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({float(self)!r})"


class Float32(TypedFloat):
    __slots__ = ()
    TAG = DataTag.FLOAT32
    FMT = struct.Struct(">f")


class Float64(TypedFloat):
    __slots__ = ()
    TAG = DataTag.FLOAT64
    FMT = struct.Struct(">d")


class OctetString(bytes):
    TAG = DataTag.OCTET_STRING

    def __repr__(self) -> str:
        return f"OctetString({bytes(self)!r})"


class VisibleString(str):
    __slots__ = ()
    TAG = DataTag.VISIBLE_STRING

    def __repr__(self) -> str:
        return f"VisibleString({str(self)!r})"


class Utf8String(str):
    __slots__ = ()
    TAG = DataTag.UTF8_STRING

    def __repr__(self) -> str:
        return f"Utf8String({str(self)!r})"


class BitString(str):
    """A bit-string as text of ``0`` and ``1``, first bit first (``BitString("1010")``)."""

    __slots__ = ()
    TAG = DataTag.BIT_STRING

    def __new__(cls, bits: str = "") -> BitString:
        if bits.strip("01"):
            raise EncodeError(f"a bit-string holds only 0 and 1, not {bits!r}")
        return str.__new__(cls, bits)

    def __repr__(self) -> str:
        return f"BitString({str(self)!r})"

    def to_int(self) -> int:
        return int(self, 2) if self else 0


class Array(tuple[Any, ...]):
    """array: elements of one type (each element still carries its own tag)."""

    __slots__ = ()
    TAG = DataTag.ARRAY

    def __repr__(self) -> str:
        return f"Array({list(self)!r})"


class Structure(tuple[Any, ...]):
    """structure: a sequence of values of any types."""

    __slots__ = ()
    TAG = DataTag.STRUCTURE

    def __repr__(self) -> str:
        return f"Structure({list(self)!r})"


@dataclass(frozen=True, slots=True)
class TypeDescription:
    """The type of a value without its data: a tag, and for arrays and structures their parts.

    ``count`` is the number of array elements; ``elements`` holds the array's one element type
    or the structure's member types.
    """

    tag: int
    count: int = 0
    elements: tuple[TypeDescription, ...] = ()

    def __post_init__(self) -> None:
        if self.tag not in SIMPLE_TAGS and self.tag not in (DataTag.ARRAY, DataTag.STRUCTURE):
            raise DecodeError(f"no compact encoding for data type {self.tag}")


@dataclass(frozen=True, slots=True)
class CompactArray:
    """compact-array: one type description, then the elements' values without tags."""

    element_type: TypeDescription
    values: tuple[Any, ...]
