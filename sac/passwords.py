"""Password hashing with scrypt (RFC 7914), parameters stored with each hash.

``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>``.  N = 2^15, r = 8, p = 1 costs 32 MiB
and some tens of milliseconds a check: run it in a thread, never on the reactor.  The
parameters travel with the hash, so raising them later keeps old hashes valid and
``needs_rehash`` says which to renew at the next login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = ["ScryptParams", "hash_password", "needs_rehash", "verify_password"]


@dataclass(frozen=True, slots=True)
class ScryptParams:
    log2_n: int = 15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 129 * self.r * (2**self.log2_n) * self.p + (1 << 20)


DEFAULT = ScryptParams()
_SALT = 16
_LENGTH = 32
MIN_LENGTH = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=2**params.log2_n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=_LENGTH,
    )


def hash_password(password: str, params: ScryptParams = DEFAULT) -> str:
    """A new salted hash of ``password``; refuses one shorter than 8 characters."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password has at least {MIN_LENGTH} characters")
    salt = os.urandom(_SALT)
    digest = _derive(password, salt, params)
    return f"scrypt${params.log2_n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not an scrypt password hash")
    log2_n, r, p = (int(x) for x in parts[1:4])
    if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return ScryptParams(log2_n, r, p), _unb64(parts[4]), _unb64(parts[5])


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (a comparison in constant time)."""
    params, salt, digest = _parse(encoded)
    return hmac.compare_digest(_derive(password, salt, params), digest)


def needs_rehash(encoded: str, params: ScryptParams = DEFAULT) -> bool:
    return _parse(encoded)[0] != params
