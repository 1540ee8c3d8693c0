"""The one exception tree of sac.

Every error raised on purpose by sac derives from :class:`SacError`.  Foreign exceptions
(``struct.error``, ``IndexError``, ``construct.ConstructError``,
``cryptography.exceptions.InvalidTag`` ...) are converted where they arise and never escape
the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


class StoreUnavailable(StorageError):
    """The store failed or did not answer in time (the push path then spools what came)."""


class InvalidRequest(StorageError, ValueError):
    """A request the store's rules refuse: a key that is not 16 bytes, a deadline already
    past, a name too long, a page size or a time range out of bounds, a field no meter has.
    A ValueError too, as callers have always caught it."""


class BadCursor(InvalidRequest):
    """A page cursor that is not one of this list or export (damaged, or of another query)."""


class UnknownToken(StorageError, KeyError):
    """No API token has this id (a KeyError too, as callers have always caught it)."""


class UnknownMeter(StorageError):
    """No meter has this LDN."""

    def __init__(self, ldn: str) -> None:
        super().__init__(f"no meter {ldn!r}")
        self.ldn = ldn


class Conflict(StorageError):
    """A write that breaks a uniqueness rule (an LDN or system title already present)."""


class KeyImportError(StorageError):
    """A key import refused as a whole; ``errors`` lists every bad line (each a
    :class:`sac.store.keycsv.RowError`)."""

    def __init__(self, errors: Sequence[object]) -> None:
        shown = "; ".join(map(str, errors[:5])) + ("; ..." if len(errors) > 5 else "")
        super().__init__(f"{len(errors)} bad lines, nothing imported: {shown}")
        self.errors = tuple(errors)


class BulkError(StorageError):
    """A bulk change refused as a whole: ``errors`` {position in the list: reason}."""

    def __init__(self, errors: Mapping[int, str]) -> None:
        self.errors = dict(sorted(errors.items()))
        first = ", ".join(f"#{i}: {why}" for i, why in list(self.errors.items())[:3])
        more = f" and {len(self.errors) - 3} more" if len(self.errors) > 3 else ""
        super().__init__(f"{len(self.errors)} of the items are refused ({first}{more})")


class UnknownCommand(StorageError):
    """No command has this id."""

    def __init__(self, command_id: int) -> None:
        super().__init__(f"no command {command_id}")
        self.command_id = command_id


class UnknownJob(StorageError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class UnknownMeters(StorageError):
    """A job's LDNs that are no meter's, refused: ``ldns`` (the first 100 of them) and how
    many there are in all (``count``)."""

    SHOWN = 100

    def __init__(self, ldns: Sequence[str], count: int) -> None:
        shown = list(ldns[: self.SHOWN])
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        super().__init__(
            f"{count} LDN{'s are' if count > 1 else ' is'} no meter's: {', '.join(shown)}{more};"
            " nothing is queued (ask to skip unknown LDNs to queue the others)"
        )
        self.ldns = tuple(shown)
        self.count = count


class JobStateError(StorageError):
    """A job moved where its state does not allow (cancel a finished job)."""


class UnknownAlarm(StorageError):
    """No alarm has this id (no event has it, or that event is no alarm)."""

    def __init__(self, alarm_id: int) -> None:
        super().__init__(f"no alarm {alarm_id}")
        self.alarm_id = alarm_id


class AlreadyAcknowledged(Conflict):
    """An alarm an operator has acknowledged already: by whom and when, said."""


class CommandStateError(StorageError):
    """A command moved where its state does not allow (cancel a command already sent...)."""


class UnknownUser(StorageError):
    """No (active) user has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user {name!r}")
        self.name = name


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
