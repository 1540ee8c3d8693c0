"""The one exception tree of sac.

Every error raised on purpose by sac derives from :class:`SacError`.  Foreign exceptions
(``struct.error``, ``IndexError``, ``construct.ConstructError``,
``cryptography.exceptions.InvalidTag`` ...) are converted where they arise and never escape
the package.
"""

from __future__ import annotations


class SacError(Exception):
    """Root of every error sac raises on purpose."""

    #: what a sans-IO machine had already produced from the same input when this stopped it
    events: tuple[object, ...] = ()


# --- the DLMS codec (sac.dlms) -------------------------------------------------------------


class CodecError(SacError):
    """Bytes that cannot be turned into a value, or a value that cannot be turned into bytes."""


class FramingError(CodecError):
    """A wrapper PDU with a bad header: wrong version, unexpected wPort, too long."""


class DecodeError(CodecError):
    """Bytes that are not a valid encoding (truncated, unknown tag, out of range, too deep)."""


class EncodeError(CodecError):
    """A value that has no valid encoding (out of range, ambiguous type)."""


class SecurityError(SacError):
    """A protected APDU that cannot be accepted."""


class DecryptionError(SecurityError):
    """Authentication failed: wrong key, wrong system title or a tampered APDU.

    The message never names a key or any plaintext.
    """


class ReplayError(SecurityError):
    """An invocation counter that is not newer than the last one accepted."""

    def __init__(self, received: int, last: int) -> None:
        super().__init__(f"invocation counter {received} is not newer than {last}")
        self.received = received
        self.last = last


class ProtocolError(SacError):
    """A DLMS exchange that broke the rules of the association."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the association's state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the association's state does not allow.

    ``wire_code`` holds the peer's own error code when it sent one (an exception-response's
    service error, an AARE diagnostic...); ``invocation_counter`` the counter a meter expects
    when it refused ours (service error 6), to start again from there.  ``authenticated``
    is True only when the peer's answer came ciphered and its tag checked out: anyone on the
    path can forge an unciphered exception-response, so what it says is a hint, never a fact.
    """

    def __init__(
        self,
        message: str,
        wire_code: int | None = None,
        invocation_counter: int | None = None,
        *,
        authenticated: bool = False,
    ) -> None:
        super().__init__(message)
        self.wire_code = wire_code
        self.invocation_counter = invocation_counter
        self.authenticated = authenticated


# --- the layers above the codec ------------------------------------------------------------


class StorageError(SacError):
    """The store failed or refused an operation."""


class ConfigurationError(SacError):
    """The configuration is missing or invalid."""


class PluginError(SacError):
    """A meter profile plugin is broken."""


# --- the web application (sac.web) ---------------------------------------------------------
# What each becomes for a browser, an API client or a SOAP caller: sac.web.errors.ERRORS.


class WebError(SacError):
    """A request of the web application (pages, JSON API, SOAP) refused."""


class BadRequest(WebError):
    """A request that is malformed or asks for what cannot be (HTTP 400)."""


class FieldError(BadRequest, ValueError):
    """A value that breaks its field's rule: the message says the rule, and never repeats
    the value of a key.  A ValueError too, for callers that catch one."""


class Forbidden(WebError):
    """The user's role does not allow this (HTTP 403)."""


class CsrfError(Forbidden):
    """A form without this session's CSRF token: stale, or not from this site."""


class SignInRefused(WebError):
    """A sign-in refused before its password is checked: the client address has too many
    failed (or running) sign-ins (``busy`` False), or this process is checking as many
    passwords as it may (``busy`` True).  ``wait``: seconds before trying again."""

    def __init__(self, wait: int, busy: bool) -> None:
        super().__init__(
            "the SAC is checking too many sign-ins at once; try again in a moment"
            if busy
            else f"too many failed sign-ins from this address; try again in {wait} s"
        )
        self.wait = wait
        self.busy = busy
