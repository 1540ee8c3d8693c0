"""Meter keys at rest: wrapped with AES-256-GCM under the master key (KEK).

A wrapped key is ``version (1) | KEK id (8) | nonce (12) | ciphertext + tag (16 + 16)``.  The
AAD binds it to its place -- meter LDN, client SAP and role (EK/AK) -- so a wrapped key copied
onto another meter's row does not unwrap.  The KEK id (a fingerprint of the KEK, not the KEK)
tells which master key wrapped it: a store with keys refuses to start with no master key or
another one, and :func:`rewrap` moves a key to a new master key (rotation).

The master key comes from configuration or the environment (``SAC_MASTER_KEY``) as 64 hex
digits; :func:`new_master_key` makes one.  Plaintext keys live only in memory, while a session
needs them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sac.errors import ConfigurationError, SecurityError

__all__ = [
    "ENV_MASTER_KEY",
    "KeyUnwrapError",
    "MasterKey",
    "key_place",
    "new_master_key",
    "rewrap",
    "wrapped_by",
]

ENV_MASTER_KEY = "SAC_MASTER_KEY"
_VERSION = 1
_HEADER = 1 + 8 + 12


class KeyUnwrapError(SecurityError):
    """A wrapped key that does not open: another master key, another place, or damaged."""


def new_master_key() -> str:
    """A new random master key, as the 64 hex digits the configuration takes."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class MasterKey:
    """The KEK.  ``repr`` and errors show only its id, a one-way fingerprint."""

    secret: bytes = field(repr=False)
    key_id: bytes = field(init=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)  # made once, not a key

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ConfigurationError("the master key must be 32 bytes (64 hex digits)")
        fingerprint = hmac.new(self.secret, b"sac master key id", hashlib.sha256).digest()[:8]
        object.__setattr__(self, "key_id", fingerprint)
        object.__setattr__(self, "_aead", AESGCM(self.secret))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError:
            raise ConfigurationError("the master key is not hex (expected 64 hex digits)") from None
        return cls(raw)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> MasterKey | None:
        """The master key in ``SAC_MASTER_KEY``, or None when it is not set."""
        value = (os.environ if environ is None else environ).get(ENV_MASTER_KEY)
        return cls.from_text(value) if value else None

    @property
    def id_hex(self) -> str:
        return self.key_id.hex()

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MasterKey cannot be pickled")

    def wrap(self, key: bytes, place: bytes) -> bytes:
        """``key`` wrapped for ``place`` (see :func:`key_place`)."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, key, self._aad(place))
        return bytes((_VERSION,)) + self.key_id + nonce + sealed

    def unwrap(self, blob: bytes, place: bytes) -> bytes:
        if len(blob) < _HEADER + 16 or blob[0] != _VERSION:
            raise KeyUnwrapError("a wrapped key of an unknown format")
        if blob[1:9] != self.key_id:
            raise KeyUnwrapError(
                f"a key wrapped under master key {blob[1:9].hex()}, not {self.id_hex}"
            )
        try:
            return self._aead.decrypt(blob[9:21], blob[21:], self._aad(place))
        except InvalidTag:
            raise KeyUnwrapError("a wrapped key does not open here (moved or damaged)") from None

    def _aad(self, place: bytes) -> bytes:
        return bytes((_VERSION,)) + self.key_id + place


def key_place(ldn: str, client_sap: int, role: str) -> bytes:
    """What a wrapped key is bound to: its meter, its client and its role (``ek``/``ak``)."""
    if role not in ("ek", "ak"):
        raise ValueError(f"a key role is ek or ak, not {role!r}")
    return f"{ldn}\x00{client_sap}\x00{role}".encode()


def wrapped_by(blob: bytes) -> str:
    """The id of the master key that wrapped ``blob`` (hex)."""
    if len(blob) < 9:
        raise KeyUnwrapError("a wrapped key of an unknown format")
    return blob[1:9].hex()


def rewrap(old: MasterKey, new: MasterKey, blob: bytes, place: bytes) -> bytes:
    """The same key wrapped under ``new`` (master key rotation)."""
    return new.wrap(old.unwrap(blob, place), place)
