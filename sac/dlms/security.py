"""DLMS security suite 0 (AES-GCM-128, 12-byte tags) and the ciphered APDU envelopes.

* :class:`Suite0Cipher` seals and opens payloads for one key pair (EK, AK).
* :class:`CipheredApdu` is the envelope: general-glo/ded-ciphering (``DB``/``DC``, with a
  system title of 8 bytes or none at all) and glo-xxx/ded-xxx (no system title field).
* :class:`SecurityContext` is one side of a protected association: its keys, its own system
  title and invocation counter, the peer's title and the last counter accepted from it.

AES-GCM: IV = sender system title (8) || invocation counter (4, big-endian); AAD = SC || AK
(|| plaintext when only authenticated); the tag is the first 12 bytes of the GCM tag.

``cryptography``'s one-shot ``AESGCM`` only verifies 16-byte tags, and its streaming API costs
about 2.3 times more per message.  :meth:`Suite0Cipher.open` therefore uses ``AESGCM`` twice:
the key stream (the encryption of zeros) gives the plaintext, and the full tag is recomputed
over it and compared in constant time with the 12 bytes received.  This is the GCM check
exactly; no plaintext is returned before it passes.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sac.dlms.axdr import decode_ber_length, encode_ber_length, encoder
from sac.errors import DecodeError, DecryptionError, EncodeError, ReplayError, SecurityError

__all__ = [
    "GLO_TAG_FOR",
    "PLAIN_TAG_FOR",
    "SC_AUTHENTICATED",
    "SC_AUTHENTICATED_ENCRYPTED",
    "SC_BROADCAST_KEY",
    "SC_COMPRESSED",
    "SC_ENCRYPTED",
    "TAG_LENGTH",
    "CipheredApdu",
    "SecurityContext",
    "SecurityControl",
    "Suite0Cipher",
]

TAG_LENGTH = 12
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_AUTHENTICATED_ENCRYPTED = 0x30
SC_BROADCAST_KEY = 0x40
SC_COMPRESSED = 0x80

GENERAL_GLO_CIPHERING = 0xDB
GENERAL_DED_CIPHERING = 0xDC

# plain xDLMS tag -> glo-xxx tag, and back (Green Book; ded-xxx is glo-xxx + 8)
GLO_TAG_FOR = {
    0xC0: 0xC8,  # get-request
    0xC1: 0xC9,  # set-request
    0xC2: 0xCA,  # event-notification-request
    0xC3: 0xCB,  # action-request
    0xC4: 0xCC,  # get-response
    0xC5: 0xCD,  # set-response
    0xC7: 0xCF,  # action-response
    0x01: 0x21,  # initiateRequest
    0x08: 0x28,  # initiateResponse
    0x0E: 0x2E,  # confirmedServiceError
}
PLAIN_TAG_FOR = {v: k for k, v in GLO_TAG_FOR.items()}
_GLO_TAGS = frozenset(GLO_TAG_FOR.values())
_DED_TAGS = frozenset(t + 8 for t in (0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xCF))


@dataclass(frozen=True, slots=True)
class SecurityControl:
    """The security control byte: suite in bits 0-3, then the policy flags."""

    suite: int = 0
    authenticated: bool = True
    encrypted: bool = True
    broadcast_key: bool = False
    compressed: bool = False

    @classmethod
    def from_byte(cls, sc: int) -> SecurityControl:
        return cls(
            sc & 0x0F,
            bool(sc & SC_AUTHENTICATED),
            bool(sc & SC_ENCRYPTED),
            bool(sc & SC_BROADCAST_KEY),
            bool(sc & SC_COMPRESSED),
        )

    def to_byte(self) -> int:
        return (
            (self.suite & 0x0F)
            | (SC_AUTHENTICATED if self.authenticated else 0)
            | (SC_ENCRYPTED if self.encrypted else 0)
            | (SC_BROADCAST_KEY if self.broadcast_key else 0)
            | (SC_COMPRESSED if self.compressed else 0)
        )


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise SecurityError(f"{name} must be 16 bytes (AES-128)")
    return bytes(key)


class Suite0Cipher:
    """AES-GCM-128 with 12-byte tags for one (EK, AK) pair; AK defaults to EK.

    The keys are kept private: ``repr`` names neither, and no error message carries them.
    """

    __slots__ = ("_aad", "_ak", "_gcm")

    def __init__(self, ek: bytes, ak: bytes | None = None) -> None:
        ek = _check_key("the encryption key", ek)
        self._ak = _check_key("the authentication key", ak) if ak is not None else ek
        self._gcm = AESGCM(ek)
        self._aad = bytes((SC_AUTHENTICATED_ENCRYPTED,)) + self._ak

    def __repr__(self) -> str:
        return "Suite0Cipher(<keys hidden>)"

    def __reduce__(self) -> NoReturn:  # keys never leave the process by pickling
        raise TypeError("a Suite0Cipher cannot be pickled")

    def seal(self, sc: int, system_title: bytes, ic: int, plaintext: bytes) -> bytes:
        """The protected payload: ciphertext || tag, plaintext || tag, or ciphertext."""
        iv = _iv(system_title, ic)
        _check_policy(sc)
        if sc & SC_ENCRYPTED:
            aad = bytes((sc,)) + self._ak if sc & SC_AUTHENTICATED else None
            out = self._gcm.encrypt(iv, plaintext, aad)
            return out[:-4] if aad is not None else out[:-16]
        if sc & SC_AUTHENTICATED:
            return plaintext + self.gmac(sc, system_title, ic, plaintext)
        raise SecurityError(f"security control 0x{sc:02x} protects nothing")

    def open(self, sc: int, system_title: bytes, ic: int, payload: bytes) -> bytes:
        """The plaintext of a payload; raises :class:`DecryptionError` on any mismatch."""
        iv = _iv(system_title, ic)
        if sc != SC_AUTHENTICATED_ENCRYPTED:
            return self._open_other(sc, iv, system_title, ic, payload)
        n = len(payload) - TAG_LENGTH
        if n < 0:
            raise DecryptionError("the protected payload is shorter than its tag")
        gcm = self._gcm
        # key stream = E(zeros); plaintext = ciphertext ^ key stream (the stream's 16-byte tag
        # is shifted away); then the tag of (AAD, ciphertext) is recomputed and compared
        stream = int.from_bytes(gcm.encrypt(iv, bytes(n), None), "big") >> 128
        plaintext = (int.from_bytes(payload[:n], "big") ^ stream).to_bytes(n, "big")
        full = gcm.encrypt(iv, plaintext, self._aad)
        if not hmac.compare_digest(full[n : n + TAG_LENGTH], payload[n:]):
            raise DecryptionError("authentication failed (wrong key, system title or data)")
        return plaintext

    def _open_other(
        self, sc: int, iv: bytes, system_title: bytes, ic: int, payload: bytes
    ) -> bytes:
        _check_policy(sc)  # what is left: authenticated only, encrypted only, or nothing
        if sc == SC_AUTHENTICATED:
            if len(payload) < TAG_LENGTH:
                raise DecryptionError("the protected payload is shorter than its tag")
            body, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
            if not hmac.compare_digest(self.gmac(sc, system_title, ic, body), tag):
                raise DecryptionError("authentication failed (wrong key, system title or data)")
            return body
        if sc == SC_ENCRYPTED:
            n = len(payload)
            stream = int.from_bytes(self._gcm.encrypt(iv, bytes(n), None), "big") >> 128
            return (int.from_bytes(payload, "big") ^ stream).to_bytes(n, "big")
        raise SecurityError(f"security control 0x{sc:02x} protects nothing")

    def gmac(self, sc: int, system_title: bytes, ic: int, data: bytes) -> bytes:
        """The 12-byte GMAC over SC || AK || data (HLS-GMAC, authenticated-only APDUs)."""
        iv = _iv(system_title, ic)
        return self._gcm.encrypt(iv, b"", bytes((sc,)) + self._ak + data)[:TAG_LENGTH]


def _iv(system_title: bytes, ic: int) -> bytes:
    if len(system_title) != 8:
        raise SecurityError(f"a system title has 8 bytes, not {len(system_title)}")
    try:
        return system_title + ic.to_bytes(4, "big")
    except OverflowError:
        raise SecurityError(f"invocation counter {ic} is not a u32") from None


def _check_policy(sc: int) -> None:
    if sc & 0x0F:
        raise SecurityError(f"security suite {sc & 0x0F} is not supported (only suite 0)")
    if sc & SC_COMPRESSED:
        raise SecurityError("compressed APDUs are not supported")
    if sc & SC_BROADCAST_KEY:
        raise SecurityError("the broadcast key is not supported")


@dataclass(frozen=True, slots=True)
class CipheredApdu:
    """A protected APDU as on the wire.

    ``system_title`` is ``None`` for glo-xxx/ded-xxx (no field), ``b""`` when a general
    ciphering APDU carries an empty title (Italian practice), else the 8 bytes.
    """

    tag: int
    system_title: bytes | None
    security_control: int
    invocation_counter: int
    payload: bytes = field(repr=False)

    @property
    def is_general(self) -> bool:
        return self.tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING)

    @encoder
    def to_bytes(self) -> bytes:
        content = (
            bytes((self.security_control,))
            + self.invocation_counter.to_bytes(4, "big")
            + self.payload
        )
        if self.is_general:
            st = self.system_title or b""
            return bytes((self.tag, len(st))) + st + encode_ber_length(len(content)) + content
        if self.system_title is not None:
            raise EncodeError("glo-xxx APDUs carry no system title")
        return bytes((self.tag,)) + encode_ber_length(len(content)) + content

    @classmethod
    def from_bytes(cls, data: bytes) -> CipheredApdu:
        return cls(*_parse_ciphered(data))


def _parse_ciphered(data: bytes) -> tuple[int, bytes | None, int, int, bytes]:
    """(tag, system title, security control, invocation counter, payload) of an envelope."""
    if len(data) < 2:
        raise DecodeError("truncated: ciphered APDU")
    tag = data[0]
    title: bytes | None = None
    if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        st_len = data[1]
        if st_len == 8:
            title = bytes(data[2:10])
            pos = 10
        elif st_len == 0:
            title = b""
            pos = 2
        else:
            raise DecodeError(f"a system title of {st_len} bytes (expected 0 or 8)")
    elif tag in _GLO_TAGS or tag in _DED_TAGS:
        pos = 1
    else:
        raise DecodeError(f"0x{tag:02x} is not a ciphered APDU")
    if pos >= len(data):
        raise DecodeError("truncated: ciphered content length missing")
    length = data[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = decode_ber_length(data, pos)
    if pos + length != len(data):
        raise DecodeError(f"ciphered content announces {length} bytes, {len(data) - pos} are there")
    if length < 5:
        raise DecodeError("ciphered content too short for SC and invocation counter")
    return (
        tag,
        title,
        data[pos],
        int.from_bytes(data[pos + 1 : pos + 5], "big"),
        bytes(data[pos + 5 :]),
    )


CIPHERED_TAGS = frozenset((GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING)) | _GLO_TAGS | _DED_TAGS


def is_ciphered(tag: int) -> bool:
    return tag in CIPHERED_TAGS


class SecurityContext:
    """One side of a protected association (sans-IO: the caller persists the counters).

    ``invocation_counter`` is the next counter this side will use; ``peer_invocation_counter``
    the last one accepted from the peer (None: anything is accepted once).  A counter is only
    recorded as accepted after its APDU authenticated.
    """

    def __init__(
        self,
        cipher: Suite0Cipher,
        system_title: bytes,
        *,
        peer_system_title: bytes | None = None,
        invocation_counter: int = 1,
        peer_invocation_counter: int | None = None,
        security_control: int = SC_AUTHENTICATED_ENCRYPTED,
        omit_system_title: bool = False,
    ) -> None:
        if len(system_title) != 8:
            raise SecurityError("a system title has 8 bytes")
        if peer_system_title is not None and len(peer_system_title) != 8:
            raise SecurityError("a peer system title has 8 bytes")
        self.cipher = cipher
        self.system_title = bytes(system_title)
        self.peer_system_title = peer_system_title
        self.invocation_counter = invocation_counter
        self.peer_invocation_counter = peer_invocation_counter
        self.security_control = security_control
        self.omit_system_title = omit_system_title

    def __repr__(self) -> str:
        return (
            f"SecurityContext(system_title={self.system_title.hex()}, "
            f"peer={self.peer_system_title.hex() if self.peer_system_title else None}, "
            f"ic={self.invocation_counter}, peer_ic={self.peer_invocation_counter})"
        )

    def protect(self, apdu: bytes, *, general: bool = True) -> bytes:
        """Cipher ``apdu`` with the next invocation counter (general-glo or glo-xxx)."""
        ic = self.invocation_counter
        if ic > 0xFFFFFFFF:
            raise SecurityError("the invocation counter is exhausted: the key must be renewed")
        sc = self.security_control
        payload = self.cipher.seal(sc, self.system_title, ic, apdu)
        self.invocation_counter = ic + 1
        if general:
            title = b"" if self.omit_system_title else self.system_title
            return CipheredApdu(GENERAL_GLO_CIPHERING, title, sc, ic, payload).to_bytes()
        glo = GLO_TAG_FOR.get(apdu[0]) if apdu else None
        if glo is None:
            raise EncodeError("this APDU has no glo-xxx form: use general ciphering")
        return CipheredApdu(glo, None, sc, ic, payload).to_bytes()

    def unprotect(self, data: bytes | CipheredApdu) -> bytes:
        """The plaintext APDU, once the envelope, the title, the counter and the tag check out.

        Nothing in the context changes unless the APDU authenticates: a forged frame can
        neither teach it a system title nor move its counter.
        """
        if isinstance(data, CipheredApdu):
            tag, title, sc, ic, payload = (
                data.tag,
                data.system_title,
                data.security_control,
                data.invocation_counter,
                data.payload,
            )
        else:
            tag, title, sc, ic, payload = _parse_ciphered(data)
        if tag == GENERAL_DED_CIPHERING or tag in _DED_TAGS:
            raise SecurityError("dedicated-key ciphering needs a dedicated key: not supported")
        sender = self.peer_system_title
        if title:
            if title == self.system_title:
                raise SecurityError("the APDU carries this side's own system title")
            if sender is not None and title != sender:
                raise SecurityError("the APDU's system title is not the peer's")
            sender = title
        elif sender is None:
            raise SecurityError("no system title on the wire and none known for the peer")
        last = self.peer_invocation_counter
        if last is not None and ic <= last:
            raise ReplayError(ic, last)
        if sc != self.security_control:
            raise SecurityError(
                f"security control 0x{sc:02x} where 0x{self.security_control:02x} is required"
            )
        plaintext = self.cipher.open(sc, sender, ic, payload)
        if tag != GENERAL_GLO_CIPHERING and (not plaintext or PLAIN_TAG_FOR[tag] != plaintext[0]):
            raise SecurityError(f"a glo- envelope 0x{tag:02x} around another kind of APDU")
        self.peer_system_title = sender
        self.peer_invocation_counter = ic
        return plaintext
