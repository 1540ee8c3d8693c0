"""COSEM ``Data`` in typed JSON: ``{"type": "<DLMS type>", "value": ...}``, the form the
public test vectors write values in (``tests/vectors/vectors.json``), both ways.

========================  ===============================================================
``type``                  ``value``
========================  ===============================================================
``null-data``             ``null``
``boolean``               ``true`` / ``false``
integers and ``enum``     a JSON integer in the type's range (``integer``, ``long``,
                          ``double-long``, ``long64``, ``unsigned``, ``long-unsigned``,
                          ``double-long-unsigned``, ``long64-unsigned``, ``enum``, ``bcd``)
``float32``, ``float64``  a JSON number
``octet-string``          hex digits (``"00000a006aff"``)
``visible-string``,       text (visible-string: Latin-1, as the codec encodes it)
``utf8-string``
``bit-string``            text of ``0`` and ``1``, first bit first
``date-time``, ``date``,  hex of the 12, 5 or 4 bytes (the tagged COSEM types, 25-27; most
``time``                  meters send these as octet-strings instead)
``array``,                a JSON list of typed values (an array's elements of one type)
``structure``
========================  ===============================================================

:func:`from_json` refuses what is not one of these with :class:`TypedJsonError`, which names
the place at fault (``value[0].value[1]``); :func:`to_json` writes any value the codec
decodes (a compact-array is written as its A-XDR bytes, ``{"type": "compact-array", "hex"}``,
read only).
"""

from __future__ import annotations

from typing import Any

from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.datatypes import (
    Array,
    Bcd,
    BitString,
    CompactArray,
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
    TypedInt,
    Unsigned,
    Utf8String,
    VisibleString,
)
from sac.errors import SacError

__all__ = ["MAX_DEPTH", "TYPE_NAMES", "TypedJsonError", "from_json", "to_json"]

MAX_DEPTH = 16  # nesting of arrays and structures a value may have
_INTS: dict[str, type[TypedInt]] = {
    "integer": Integer,
    "long": Long,
    "double-long": DoubleLong,
    "long64": Long64,
    "unsigned": Unsigned,
    "long-unsigned": LongUnsigned,
    "double-long-unsigned": DoubleLongUnsigned,
    "long64-unsigned": Long64Unsigned,
    "enum": Enum,
    "bcd": Bcd,
}
_FLOATS = {"float32": Float32, "float64": Float64}
_TIMES: dict[str, Any] = {"date-time": CosemDateTime, "date": CosemDate, "time": CosemTime}
_NAME_OF_INT = {cls: name for name, cls in _INTS.items()}
_NAME_OF_TIME = {cls: name for name, cls in _TIMES.items()}
TYPE_NAMES = (
    "null-data",
    "boolean",
    *_INTS,
    *_FLOATS,
    "octet-string",
    "visible-string",
    "utf8-string",
    "bit-string",
    *_TIMES,
    "array",
    "structure",
)


class TypedJsonError(SacError, ValueError):
    """A typed JSON value that is not one: ``path`` names the place at fault."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def from_json(node: Any, path: str = "value", depth: int = 0) -> Any:
    """The codec's value of a typed JSON value (``sac.dlms.axdr`` encodes it)."""
    if not isinstance(node, dict) or set(node) != {"type", "value"}:
        raise TypedJsonError(path, 'must be an object {"type": ..., "value": ...}')
    kind, value = node["type"], node["value"]
    if kind in _INTS:
        return _int(_INTS[kind], value, path)
    if kind in ("array", "structure"):
        return _sequence(kind, value, path, depth)
    reader = _SCALARS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise TypedJsonError(f"{path}.type", f"{kind!r} is not a DLMS type")
    try:
        return reader(value)
    except (TypeError, ValueError, SacError) as exc:
        raise TypedJsonError(path, f"not a {kind}: {exc}") from None


def _int(cls: type[TypedInt], value: Any, path: str) -> TypedInt:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypedJsonError(path, f"a {_NAME_OF_INT[cls]} is an integer")
    if not cls.LOW <= value <= cls.HIGH:
        raise TypedJsonError(path, f"a {_NAME_OF_INT[cls]} is in {cls.LOW}..{cls.HIGH}")
    typed: TypedInt = cls(value)
    return typed


def _sequence(kind: str, value: Any, path: str, depth: int) -> Array | Structure:
    if depth >= MAX_DEPTH:
        raise TypedJsonError(path, f"nested deeper than {MAX_DEPTH}")
    if not isinstance(value, list):
        raise TypedJsonError(path, f"an {kind}'s value is a list")
    items = [from_json(v, f"{path}.value[{i}]", depth + 1) for i, v in enumerate(value)]
    if kind == "structure":
        return Structure(items)
    if len({_type_name(v) for v in items}) > 1:
        raise TypedJsonError(path, "an array's elements are of one type")
    return Array(items)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _null(value: Any) -> None:
    if value is not None:
        raise TypeError("null")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _visible(value: Any) -> VisibleString:
    text = _text(value)
    if any(ord(c) > 0xFF for c in text):
        raise ValueError("Latin-1 characters only (a utf8-string takes any)")
    return VisibleString(text)


def _hex(value: Any) -> bytes:
    return bytes.fromhex(_text(value))


def _float(cls: type[float]) -> Any:
    def read(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("a number")
        return cls(value)

    return read


def _time(cls: Any) -> Any:
    return lambda value: cls.from_bytes(_hex(value))


_SCALARS: dict[str, Any] = {
    "null-data": _null,
    "boolean": _bool,
    "octet-string": lambda v: OctetString(_hex(v)),
    "visible-string": _visible,
    "utf8-string": lambda v: Utf8String(_text(v)),
    "bit-string": lambda v: BitString(_text(v)),
    **{name: _float(cls) for name, cls in _FLOATS.items()},
    **{name: _time(cls) for name, cls in _TIMES.items()},
}


def _type_name(value: Any) -> str:
    """The typed JSON name of a codec value."""
    if value is None:
        return "null-data"
    if isinstance(value, bool):
        return "boolean"
    for cls, name in (*_NAME_OF_INT.items(), *_NAME_OF_TIME.items()):
        if type(value) is cls:
            return name
    simple = {
        Float32: "float32",
        Float64: "float64",
        VisibleString: "visible-string",
        Utf8String: "utf8-string",
        BitString: "bit-string",
        Array: "array",
        Structure: "structure",
        CompactArray: "compact-array",
    }
    for cls, name in simple.items():
        if isinstance(value, cls):
            return name
    if isinstance(value, bytes):
        return "octet-string"
    if isinstance(value, str):
        return "visible-string"  # plain str encodes as one
    if isinstance(value, list):
        return "array"
    if isinstance(value, tuple):
        return "structure"
    raise TypedJsonError("value", f"{type(value).__name__} is not a COSEM value")


def to_json(value: Any) -> dict[str, Any]:
    """The typed JSON of a codec value (what a GET returned, what a SET sends)."""
    name = _type_name(value)
    if name in ("array", "structure"):
        return {"type": name, "value": [to_json(v) for v in value]}
    if name == "compact-array":
        from sac.dlms.axdr import encode_data  # (axdr imports this module's neighbours)

        return {"type": name, "hex": encode_data(value).hex()}
    if name in _TIMES:
        return {"type": name, "value": value.to_bytes().hex()}
    if name == "octet-string":
        return {"type": name, "value": bytes(value).hex()}
    if name in _INTS:
        return {"type": name, "value": int(value)}
    if name in _FLOATS:
        return {"type": name, "value": float(value)}
    if name in ("visible-string", "utf8-string", "bit-string"):
        return {"type": name, "value": str(value)}
    return {"type": name, "value": value}  # null-data, boolean
