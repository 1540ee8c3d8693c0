"""One entry point for every APDU: ACSE, xDLMS, and the ciphered envelopes."""

from __future__ import annotations

from typing import Any

from sac.dlms.acse import AARE_TAG, AARQ_TAG, RLRE_TAG, RLRQ_TAG, decode_acse
from sac.dlms.axdr import DEFAULT_LIMITS, Limits
from sac.dlms.security import CIPHERED_TAGS, CipheredApdu
from sac.dlms.xdlms import decode_xdlms

__all__ = ["decode_apdu"]

_ACSE_TAGS = frozenset((AARQ_TAG, AARE_TAG, RLRQ_TAG, RLRE_TAG))


def decode_apdu(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one whole APDU.  A ciphered one comes back as a :class:`CipheredApdu`."""
    if buf and buf[0] in _ACSE_TAGS:
        return decode_acse(buf)
    if buf and buf[0] in CIPHERED_TAGS:
        return CipheredApdu.from_bytes(buf)
    return decode_xdlms(buf, limits)
