"""Compact frames (IC 62 compact_buffer): a decoder driven by declared layouts.

A :class:`CompactLayout` lists the fields of a template as data: name, OBIS, attribute and a
kind.  Fixed-size kinds are raw big-endian values; ``octet-string``/``visible-string`` keep
their one-byte length; ``entries`` is a counted array (a one-byte count, then fixed records).
:func:`compile_layout` turns a layout into a decoder that unpacks each run of fixed fields
with one ``struct`` call.

In Italian compact frames byte 0 of the buffer is the template id; :func:`decode_compact`
dispatches on it.  A template that no layout declares can still be decoded from its
template_description (IC 62 attribute 5) with :func:`layout_from_description`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import construct as cs

from sac.dlms.axdr import (
    MALFORMED,
    DataTag,
    OctetString,
    Structure,
    TypeDescription,
    decode_ber_length,
    decode_untagged,
    encode_ber_length,
    encode_untagged,
)
from sac.dlms.obis import Obis
from sac.errors import DecodeError, EncodeError

__all__ = [
    "CompactField",
    "CompactFrame",
    "CompactLayout",
    "compact_buffer_of",
    "compile_layout",
    "decode_compact",
    "layout_from_description",
]

# kind -> struct format of a fixed-size field
FIXED_KINDS: dict[str, str] = {
    "bool": "?",
    "u8": "B",
    "enum": "B",
    "i8": "b",
    "u16": "H",
    "i16": "h",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "f32": "f",
    "f64": "d",
}
VARIABLE_KINDS = ("octet-string", "visible-string", "entries", "bytes", "data")


@dataclass(frozen=True, slots=True)
class CompactField:
    """One field of a compact buffer.

    ``kind``: a key of FIXED_KINDS; ``bytes`` (``size`` raw bytes); ``octet-string`` or
    ``visible-string`` (a BER length -- one byte below 128 -- then the bytes); ``entries``
    (a one-byte count, then that many records of the fixed-size ``entries`` fields);
    ``data`` (any value of type ``description``, written without tags: dates, structures,
    arrays).
    """

    name: str
    kind: str
    obis: Obis | None = None
    attribute: int = 2
    size: int = 0
    entries: tuple[CompactField, ...] = ()
    description: TypeDescription | None = None

    def __post_init__(self) -> None:
        if self.kind not in FIXED_KINDS and self.kind not in VARIABLE_KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}")
        if self.kind == "bytes" and self.size <= 0:
            raise ValueError(f"field {self.name!r}: bytes need a size")
        if self.kind == "data" and self.description is None:
            raise ValueError(f"field {self.name!r}: data needs a type description")
        if self.kind == "entries":
            if not self.entries:
                raise ValueError(f"field {self.name!r}: entries need record fields")
            for f in self.entries:
                if f.kind not in FIXED_KINDS:
                    raise ValueError(f"field {self.name!r}: record field {f.name!r} not fixed")
        if self.obis is not None and not isinstance(self.obis, Obis):
            object.__setattr__(self, "obis", Obis(self.obis))


def fld(
    name: str, kind: str, obis: str | Obis | None = None, attribute: int = 2, **kw: Any
) -> CompactField:
    """Shorthand for layouts written as data."""
    return CompactField(name, kind, Obis(obis) if obis else None, attribute, **kw)


@dataclass(frozen=True, slots=True)
class CompactLayout:
    template_id: int
    name: str
    fields: tuple[CompactField, ...]
    # Italian CFs start with the template id; a plain IC 62 buffer does not.
    id_prefix: bool = True
    # allow bytes after the last declared field (kept as ``trailing``)
    allow_trailing: bool = False
    _decoder: Callable[[bytes, int], tuple[dict[str, Any], int]] = field(
        init=False, compare=False, repr=False
    )

    _builder: cs.Construct = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # compiled once, when the layout is declared: a bad layout fails at import time
        object.__setattr__(self, "_decoder", compile_layout(self))
        object.__setattr__(self, "_builder", construct_of(self))

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The compact buffer holding ``values`` (built with the layout's construct schema)."""
        try:
            raw: bytes = self._builder.build(values)
            return raw
        except (cs.ConstructError, KeyError, TypeError, ValueError, struct.error) as exc:
            raise EncodeError(f"cannot build {self.name}: {exc}") from None

    def decode(self, buffer: bytes) -> CompactFrame:
        start = 0
        if self.id_prefix:
            if not buffer or buffer[0] != self.template_id:
                raise DecodeError(f"compact buffer is not template {self.template_id}")
            start = 1
        try:
            values, end = self._decoder(buffer, start)
        except MALFORMED as exc:
            raise DecodeError(f"compact frame {self.name} is truncated: {exc}") from None
        if end == len(buffer):
            return CompactFrame(self, values)
        if not self.allow_trailing:
            raise DecodeError(f"{len(buffer) - end} bytes left after compact frame {self.name}")
        return CompactFrame(self, values, bytes(buffer[end:]))


@dataclass(frozen=True, slots=True)
class CompactFrame:
    layout: CompactLayout
    values: dict[str, Any]
    trailing: bytes = b""

    @property
    def template_id(self) -> int:
        return self.layout.template_id

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def readings(self) -> list[tuple[CompactField, Any]]:
        """(field, value) for every field bound to a COSEM object."""
        return [(f, self.values[f.name]) for f in self.layout.fields if f.obis is not None]


def _run_decoder(names: tuple[str, ...], fmt: struct.Struct) -> Callable[..., int]:
    unpack = fmt.unpack_from
    size = fmt.size

    def step(buf: bytes, pos: int, out: dict[str, Any]) -> int:
        if pos + size > len(buf):
            raise DecodeError(f"truncated: {', '.join(names)} need {size} bytes")
        out.update(zip(names, unpack(buf, pos)))  # noqa: B905 - struct gives len(names)
        return pos + size

    return step


def _string_decoder(name: str, text: bool) -> Callable[..., int]:
    def step(buf: bytes, pos: int, out: dict[str, Any]) -> int:
        n, start = decode_ber_length(buf, pos)
        end = start + n
        if end > len(buf):
            raise DecodeError(f"truncated: {name}")
        raw = bytes(buf[start:end])
        out[name] = raw.decode("latin-1") if text else raw
        return end

    return step


def _bytes_decoder(name: str, size: int) -> Callable[..., int]:
    def step(buf: bytes, pos: int, out: dict[str, Any]) -> int:
        end = pos + size
        if end > len(buf):
            raise DecodeError(f"truncated: {name} needs {size} bytes")
        out[name] = bytes(buf[pos:end])
        return end

    return step


def _data_decoder(name: str, description: TypeDescription) -> Callable[..., int]:
    def step(buf: bytes, pos: int, out: dict[str, Any]) -> int:
        out[name], end = decode_untagged(description, buf, pos)
        return end

    return step


def _entries_decoder(f: CompactField) -> Callable[..., int]:
    names = tuple(e.name for e in f.entries)
    record = struct.Struct(">" + "".join(FIXED_KINDS[e.kind] for e in f.entries))
    size = record.size
    iter_unpack = record.iter_unpack

    def step(buf: bytes, pos: int, out: dict[str, Any]) -> int:
        if pos >= len(buf):
            raise DecodeError(f"truncated: count of {f.name} missing")
        count = buf[pos]
        start = pos + 1
        end = start + count * size
        if end > len(buf):
            raise DecodeError(f"truncated: {f.name} announces {count} records of {size} bytes")
        out[f.name] = [dict(zip(names, r, strict=True)) for r in iter_unpack(buf[start:end])]
        return end

    return step


def compile_layout(layout: CompactLayout) -> Callable[[bytes, int], tuple[dict[str, Any], int]]:
    """A decoder for ``layout``: consecutive fixed fields become one ``struct`` unpack."""
    steps: list[Callable[..., int]] = []
    run_names: list[str] = []
    run_fmt: list[str] = []

    def flush() -> None:
        if run_names:
            steps.append(_run_decoder(tuple(run_names), struct.Struct(">" + "".join(run_fmt))))
            run_names.clear()
            run_fmt.clear()

    seen: set[str] = set()
    for f in layout.fields:
        if f.name in seen:
            raise ValueError(f"layout {layout.name}: field {f.name!r} declared twice")
        seen.add(f.name)
        if f.kind in FIXED_KINDS:
            run_names.append(f.name)
            run_fmt.append(FIXED_KINDS[f.kind])
            continue
        flush()
        if f.kind in ("octet-string", "visible-string"):
            steps.append(_string_decoder(f.name, f.kind == "visible-string"))
        elif f.kind == "bytes":
            steps.append(_bytes_decoder(f.name, f.size))
        elif f.kind == "data":
            assert f.description is not None
            steps.append(_data_decoder(f.name, f.description))
        else:
            steps.append(_entries_decoder(f))
    flush()

    def decode(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for step in steps:
            pos = step(buf, pos, out)
        return out, pos

    return decode


# --- building, with construct ---------------------------------------------------------------
# Parsing uses the struct runs above (about 10x faster than construct, 2x faster than
# construct's compiled parser on CF47); building -- the simulator's job -- uses construct, so
# the two implementations of one declared layout check each other in the tests.

_CONSTRUCT_OF_KIND: dict[str, cs.Construct] = {
    "bool": cs.Flag,
    "u8": cs.Int8ub,
    "enum": cs.Int8ub,
    "i8": cs.Int8sb,
    "u16": cs.Int16ub,
    "i16": cs.Int16sb,
    "u32": cs.Int32ub,
    "i32": cs.Int32sb,
    "u64": cs.Int64ub,
    "i64": cs.Int64sb,
    "f32": cs.Float32b,
    "f64": cs.Float64b,
}


class _BerLength(cs.Construct):  # type: ignore[misc]  # construct ships no types: Any
    """A BER length, as A-XDR strings keep it in compact data (one byte below 128)."""

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        first: int = cs.stream_read(stream, 1, path)[0]
        if first < 0x80:
            return first
        size = first - 0x80
        return int.from_bytes(cs.stream_read(stream, size, path), "big")

    def _build(self, obj: int, stream: Any, context: Any, path: str) -> int:
        raw = encode_ber_length(obj)
        cs.stream_write(stream, raw, len(raw), path)
        return obj


_CONSTRUCT_OF_KIND["octet-string"] = cs.Prefixed(_BerLength(), cs.GreedyBytes)
_CONSTRUCT_OF_KIND["visible-string"] = cs.PascalString(_BerLength(), "latin-1")


class _Untagged(cs.Construct):  # type: ignore[misc]  # as _BerLength
    """A value of one type description, written without tags (kind ``data``)."""

    def __init__(self, description: TypeDescription) -> None:
        super().__init__()
        self.description = description

    def _parse(self, stream: Any, context: Any, path: str) -> Any:  # pragma: no cover
        raise cs.ConstructError("parsing goes through compile_layout", path=path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        raw = encode_untagged(self.description, obj)
        cs.stream_write(stream, raw, len(raw), path)
        return obj


def _construct_of_field(f: CompactField) -> cs.Construct:
    if f.kind == "bytes":
        return cs.Bytes(f.size)
    if f.kind == "entries":
        record = cs.Struct(*(e.name / _CONSTRUCT_OF_KIND[e.kind] for e in f.entries))
        return cs.PrefixedArray(cs.Int8ub, record)
    if f.kind == "data":
        assert f.description is not None
        return _Untagged(f.description)
    return _CONSTRUCT_OF_KIND[f.kind]


def construct_of(layout: CompactLayout) -> cs.Struct:
    """The layout as a construct ``Struct`` (the template id first when prefixed)."""
    members = [f.name / _construct_of_field(f) for f in layout.fields]
    if layout.id_prefix:
        members.insert(0, cs.Const(bytes((layout.template_id,))))
    return cs.Struct(*members)


def compact_buffer_of(body: Any) -> bytes:
    """The compact buffer a DATA-NOTIFICATION body carries (docs/uni-ts-11291.md §2.3).

    Variant A is the octet-string itself (Pietro Fiorentini); variant B a structure whose
    first element is the octet-string, as a standard IC 40 push writes it (Honeywell EI7).
    """
    if isinstance(body, OctetString):
        return bytes(body)
    if isinstance(body, Structure) and body and isinstance(body[0], OctetString):
        return bytes(body[0])
    raise DecodeError(f"a notification body of {type(body).__name__} carries no compact buffer")


def decode_compact(buffer: bytes, layouts: Mapping[int, CompactLayout]) -> CompactFrame:
    """Decode an Italian compact buffer by its first byte, the template id."""
    if not buffer:
        raise DecodeError("empty compact buffer")
    layout = layouts.get(buffer[0])
    if layout is None:
        raise DecodeError(f"no layout for compact frame template {buffer[0]}")
    return layout.decode(buffer)


# --- from a template description (IC 62 attribute 5) ----------------------------------------

_KIND_OF_TAG = {
    DataTag.BOOLEAN: "bool",
    DataTag.UNSIGNED: "u8",
    DataTag.ENUM: "enum",
    DataTag.INTEGER: "i8",
    DataTag.LONG_UNSIGNED: "u16",
    DataTag.LONG: "i16",
    DataTag.DOUBLE_LONG_UNSIGNED: "u32",
    DataTag.DOUBLE_LONG: "i32",
    DataTag.LONG64_UNSIGNED: "u64",
    DataTag.LONG64: "i64",
    DataTag.FLOAT32: "f32",
    DataTag.FLOAT64: "f64",
    DataTag.OCTET_STRING: "octet-string",
    DataTag.VISIBLE_STRING: "visible-string",
}


def _captured(i: int, capture: tuple[Any, ...] | None) -> tuple[str, Obis | None, int]:
    """The name, OBIS and attribute of the ``i``-th member of a template description, from its
    capture object (class id, OBIS, attribute[, data index]) when the meter gave one."""
    if capture is None:
        return f"field{i}", None, 2
    class_id, obis, attr, *rest = capture
    name = f"{class_id}/{Obis(obis)}/{attr}" + (f"/{rest[0]}" if rest and rest[0] else "")
    return name, Obis(obis), attr


def layout_from_description(
    template_id: int,
    description: TypeDescription,
    capture_objects: tuple[tuple[Any, ...], ...] = (),
    *,
    id_prefix: bool = True,
) -> CompactLayout:
    """A layout from a template_description (``02 <n> <types>``) and its capture objects.

    ``capture_objects`` are (class id, OBIS, attribute[, data index]), as IC 62 attribute 3
    lists them.  Each member of the top structure becomes a field named after its capture
    object (``"<class>/<obis>/<attr>"``, ``"/<data index>"`` when not 0) or ``"field<n>"``.
    Flat types become the matching fixed or string kind; any other type (date-time,
    structure, array...) a ``data`` field.  What the meter describes is untrusted: a bad
    description raises DecodeError.
    """
    if description.tag != DataTag.STRUCTURE:
        raise DecodeError("a template description is a structure")
    if capture_objects and len(capture_objects) != len(description.elements):
        raise DecodeError(
            f"{len(capture_objects)} capture objects for {len(description.elements)} members"
        )
    fields = []
    names: set[str] = set()
    for i, member in enumerate(description.elements):
        name, obis_v, attr_v = _captured(i, capture_objects[i] if capture_objects else None)
        if name in names:  # the same object captured twice: keep both, apart
            name = f"{name}#{i}"
        names.add(name)
        kind = _KIND_OF_TAG.get(member.tag)
        if kind is not None:
            fields.append(CompactField(name, kind, obis_v, attr_v))
        else:
            fields.append(CompactField(name, "data", obis_v, attr_v, description=member))
    try:
        return CompactLayout(template_id, f"template {template_id}", tuple(fields), id_prefix)
    except ValueError as exc:
        raise DecodeError(f"template {template_id}: {exc}") from None
