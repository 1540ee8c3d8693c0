"""OBIS codes (IEC 62056-61): the six-group names of COSEM objects."""

from __future__ import annotations

import re
from typing import ClassVar

from sac.errors import DecodeError

__all__ = ["Obis"]

_G = r"([0-9]{1,3})"
# IEC display form A-B:C.D.E*F (F may be left out)
_TEXT = re.compile(rf"^\s*{_G}-{_G}:{_G}\.{_G}\.{_G}(?:\*{_G})?\s*\Z")
# dotted form A.B.C.D.E.F
_DOTTED = re.compile(rf"^\s*{_G}\.{_G}\.{_G}\.{_G}\.{_G}\.{_G}\s*\Z")


_TEXTS: dict[bytes, str] = {}  # str() of the codes met, as for the instances


class Obis:
    """A frozen, hashable OBIS code ``A.B.C.D.E.F`` (each group 0..255).

    Accepts ``"7.0.13.2.0.255"``, ``"7-0:13.2.0*255"`` (F defaults to 255 when omitted), six
    bytes, or another ``Obis``.  ``str()`` is the canonical dotted form; ``bytes()`` the six
    bytes of a logical name.
    """

    __slots__ = ("_b",)
    _b: bytes
    _cache: ClassVar[dict[bytes, Obis]] = {}

    def __new__(cls, value: str | bytes | bytearray | memoryview | Obis) -> Obis:
        if isinstance(value, Obis):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            if len(raw) != 6:
                raise DecodeError(f"a logical name has 6 bytes, not {len(raw)}")
        elif isinstance(value, str):
            raw = _parse_text(value)
        else:
            raise TypeError(f"cannot make an OBIS code from {type(value).__name__}")
        cached = cls._cache.get(raw)
        if cached is not None:
            return cached
        self = object.__new__(cls)
        object.__setattr__(self, "_b", raw)
        if len(cls._cache) < 4096:
            cls._cache[raw] = self
        return self

    @classmethod
    def from_groups(cls, a: int, b: int, c: int, d: int, e: int, f: int = 255) -> Obis:
        groups = (a, b, c, d, e, f)
        for g in groups:
            if not isinstance(g, int) or not 0 <= g <= 255:
                raise DecodeError(f"OBIS group {g!r} is not in 0..255")
        return cls(bytes(groups))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Obis is immutable")

    def __reduce__(self) -> tuple[type[Obis], tuple[bytes]]:
        return (Obis, (self._b,))

    @property
    def groups(self) -> tuple[int, int, int, int, int, int]:
        b = self._b
        return (b[0], b[1], b[2], b[3], b[4], b[5])

    a = property(lambda self: self._b[0])
    b = property(lambda self: self._b[1])
    c = property(lambda self: self._b[2])
    d = property(lambda self: self._b[3])
    e = property(lambda self: self._b[4])
    f = property(lambda self: self._b[5])

    def __bytes__(self) -> bytes:
        return self._b

    def __str__(self) -> str:
        text = _TEXTS.get(self._b)
        if text is None:
            text = ".".join(map(str, self._b))
            if len(_TEXTS) < 4096:
                _TEXTS[self._b] = text
        return text

    def __repr__(self) -> str:
        return f"Obis('{self}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Obis):
            return self._b == other._b
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._b)

    def __lt__(self, other: Obis) -> bool:
        if not isinstance(other, Obis):
            return NotImplemented
        return self._b < other._b

    def display(self) -> str:
        """The IEC display form, ``A-B:C.D.E*F``."""
        a, b, c, d, e, f = self._b
        return f"{a}-{b}:{c}.{d}.{e}*{f}"


def _parse_text(text: str) -> bytes:
    m = _DOTTED.match(text) or _TEXT.match(text)
    if m is None:
        raise DecodeError(f"not an OBIS code: {text!r}")
    groups = [g if g is not None else "255" for g in m.groups()]
    values = [int(g) for g in groups]
    for v in values:
        if v > 255:
            raise DecodeError(f"OBIS group {v} is not in 0..255 in {text!r}")
    return bytes(values)
