"""Mutations of real frames: what a broken radio modem, a buggy firmware or an attacker sends.

Every mutation is named (the statistics count them) and seeded (a run is repeated by its seed).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFE, 0xFF)
# length claims: BER (ACSE) and A-XDR both spell "the next 4 bytes are the length" as 0x84
CLAIM_16_MB = b"\x84\x01\x00\x00\x00"
CLAIMS = (b"\x82\xff\xff", b"\x84\xff\xff\xff\xff", CLAIM_16_MB, b"\x81\xff", b"\x7f")
NESTING = 1000  # structures nested this deep


class Mutator:
    """``mutator(frame)``: ``frame`` changed by one to three mutations."""

    def __init__(self, rng: random.Random, splice_with: Sequence[bytes] = ()) -> None:
        self.rng = rng
        self.splice_with = list(splice_with)
        self.used: Counter[str] = Counter()
        self.ops: list[tuple[str, Callable[[bytearray], None]]] = [
            ("flip", self._flip),
            ("flip", self._flip),
            ("set", self._set),
            ("insert", self._insert),
            ("delete", self._delete),
            ("truncate", self._truncate),
            ("duplicate", self._duplicate),
            ("lie-length", self._lie_length),
            ("lie-length", self._lie_length),
            ("claim-16mb", self._claim_16mb),
            ("nest-1000", self._nest),
            ("splice", self._splice),
        ]

    def __call__(self, frame: bytes) -> bytes:
        rng = self.rng
        if rng.random() < 0.03:
            self.used["random"] += 1
            return rng.randbytes(rng.randrange(0, 300))
        data = bytearray(frame)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            name, op = rng.choice(self.ops)
            self.used[name] += 1
            op(data)
        return bytes(data)

    def _at(self, data: bytearray) -> int:
        return self.rng.randrange(0, len(data)) if data else 0

    def _flip(self, data: bytearray) -> None:
        if data:
            data[self._at(data)] ^= 1 << self.rng.randrange(8)

    def _set(self, data: bytearray) -> None:
        if data:
            data[self._at(data)] = self.rng.choice(INTERESTING)

    def _insert(self, data: bytearray) -> None:
        at = self._at(data)
        data[at:at] = self.rng.randbytes(self.rng.randrange(1, 9))

    def _delete(self, data: bytearray) -> None:
        at = self._at(data)
        del data[at : at + self.rng.randrange(1, 9)]

    def _truncate(self, data: bytearray) -> None:
        del data[self._at(data) :]

    def _duplicate(self, data: bytearray) -> None:
        at = self._at(data)
        chunk = data[at : at + self.rng.randrange(1, 33)]
        data[at:at] = chunk * self.rng.randrange(1, 4)

    def _lie_length(self, data: bytearray) -> None:
        """A length that does not match what follows: the wrapper's, or a byte inside."""
        rng = self.rng
        if len(data) >= 8 and rng.random() < 0.4:
            claim = rng.choice((0, 1, len(data) - 9, len(data) - 7, 0x7FFF, 0xFFFF))
            data[6:8] = max(claim, 0).to_bytes(2, "big")
        elif data:
            at = self._at(data)
            data[at : at + 1] = rng.choice(CLAIMS)

    def _claim_16mb(self, data: bytearray) -> None:
        at = self._at(data)
        data[at : at + 1] = CLAIM_16_MB

    def _nest(self, data: bytearray) -> None:
        """An array of one array of one ... 1,000 deep (or structures), at some point."""
        at = self._at(data)
        opener = self.rng.choice((b"\x01\x01", b"\x02\x01", b"\x01\x81\x01"))
        data[at:at] = opener * NESTING

    def _splice(self, data: bytearray) -> None:
        if self.splice_with:
            other = self.rng.choice(self.splice_with)
            cut = self.rng.randrange(0, len(other) + 1)
            data[self._at(data) :] = other[cut:]
