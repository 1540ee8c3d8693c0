"""The store's domain objects: what the store hands out, never raw rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from sac.dlms import Obis

__all__ = [
    "Acknowledgement",
    "Actor",
    "AlarmCount",
    "AlarmPage",
    "AuditEntry",
    "Command",
    "CommandState",
    "CommandTransition",
    "Event",
    "ExportPage",
    "ExportedReading",
    "Ingest",
    "IngestResult",
    "Meter",
    "MeterKeys",
    "MeterPage",
    "MeterQuery",
    "MeterState",
    "MeterStatus",
    "MonthStartIndex",
    "MonthStartPage",
    "NewMeter",
    "PeerCounter",
    "PlanMark",
    "PollJob",
    "Reading",
    "Role",
    "User",
    "WebSession",
    "ldn_problem",
]

# DLMS unit codes (IEC 62056-6-2, enum "unit") the store names
UNIT_DAY = 4
UNIT_PERCENT = 56


# A logical device name (UNI/TS 11291: printable ASCII, in practice letters and digits): the
# one rule every way of adding a meter checks (form, JSON API, key CSV, the store itself).
# It is part of URLs (/meters/<LDN>, /api/v1/meters/<LDN>), so no "/", "?", "%" or space.
LDN_LENGTH = 16
LDN_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
LDN_RULE = f"an LDN is {LDN_LENGTH} characters, each a letter, a digit, '-', '_' or '.'"


def ldn_problem(ldn: str) -> str | None:
    """Why ``ldn`` is not an LDN (never repeating it: it may be a key typed in the wrong
    place), or None."""
    if len(ldn) != LDN_LENGTH:
        return f"{LDN_RULE}; this has {len(ldn)}"
    bad = next((i for i, c in enumerate(ldn, 1) if c not in LDN_CHARACTERS), None)
    if bad is not None:
        return f"{LDN_RULE}; character {bad} is not"
    return None


class MeterState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class NewMeter:
    """What an operator gives to add a meter (keys are set apart, write-only)."""

    ldn: str
    pdr: str | None = None
    system_title: bytes | None = None
    profile: str = "uni-ts-11291-12-2"
    address: str | None = None
    allowed_ips: tuple[str, ...] = ()
    poll_interval: int | None = None  # seconds between polls of a meter with an address

    def __post_init__(self) -> None:
        problem = ldn_problem(self.ldn)
        if problem is not None:
            raise ValueError(problem)
        if self.system_title is not None and len(self.system_title) != 8:
            raise ValueError("a system title is 8 bytes")
        if self.poll_interval is not None and not 60 <= self.poll_interval <= 366 * 86400:
            raise ValueError("a poll interval is 60 s to a year")


@dataclass(frozen=True, slots=True)
class Meter:
    id: int
    ldn: str
    pdr: str | None
    system_title: bytes | None
    profile: str
    address: str | None
    allowed_ips: tuple[str, ...]
    state: MeterState
    created: dt.datetime
    updated: dt.datetime
    last_connection: dt.datetime | None = None
    # the list page's values, as the last session left them (None: never heard)
    index_value: int | float | None = None
    index_scaler: int | None = None
    index_unit: int | None = None
    index_captured: dt.datetime | None = None
    diagnostic: int | None = None
    battery_value: int | None = None
    battery_unit: int | None = None
    valve_state: int | None = None
    status_at: dt.datetime | None = None
    poll_interval: int | None = None

    @property
    def index(self) -> Decimal | None:
        """The converted-volume index, scaled (in ``index_unit``)."""
        return _scaled(self.index_value, self.index_scaler)


@dataclass(frozen=True, slots=True)
class PollJob:
    """A meter due for a poll, claimed by one process until ``lease`` ends."""

    ldn: str
    address: str
    interval: int | None
    failures: int


# the meter list's sort orders: name -> column
METER_SORTS = {
    "ldn": "ldn",
    "pdr": "pdr",
    "index": "index_value",
    "diagnostic": "diagnostic",
    "battery": "battery_value",
    "last_connection": "last_connection",
    "valve": "valve_state",
}


@dataclass(frozen=True, slots=True)
class MeterQuery:
    """What the meter list shows: filters (all must hold) and one sort order.

    ``search`` is a prefix of the LDN or of the PDR; ``alarms`` keeps the meters with an
    open alarm or whose diagnostic is not zero (the meter's own alarm state);
    ``unseen_since`` those not heard since then (or never);
    ``changed_since`` those added, changed or with new list values since then.  A sort
    is one of :data:`METER_SORTS`, with the LDN breaking ties; meters without a value for it
    come last in either direction.
    """

    search: str | None = None
    state: MeterState | None = None
    valve: int | None = None
    alarms: bool = False
    unseen_since: dt.datetime | None = None
    sort: str = "ldn"
    descending: bool = False
    changed_since: dt.datetime | None = None  # set up, changed or heard from since then

    def __post_init__(self) -> None:
        if self.sort not in METER_SORTS:
            raise ValueError(f"the meter list sorts by one of {', '.join(METER_SORTS)}")


@dataclass(frozen=True, slots=True)
class MeterPage:
    """One page of the meter list; ``next_after`` continues it (None: the last page).
    ``total``: how many meters the query matches (given when the list is asked with a
    :class:`MeterQuery`)."""

    meters: tuple[Meter, ...]
    next_after: str | None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class ReadingBuckets:
    """A time range of one quantity, cut into buckets: the last reading of each bucket that
    has one, oldest first, and how many readings the whole range holds."""

    readings: tuple[Reading, ...]
    total: int


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """A meter's keys for one client, in clear: only in memory, while a session needs them."""

    ek: bytes = field(repr=False)
    ak: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one COSEM attribute of one meter, as received.

    ``value`` is the number as the meter sent it (apply ``scaler``: value x 10^scaler, in
    DLMS ``unit``); ``raw`` the A-XDR bytes of a value that is not a number.  ``captured`` is
    the meter's clock (None when the meter gave none), ``received`` the SAC's.
    """

    ldn: str
    obis: Obis
    attribute: int
    value: int | float | None
    received: dt.datetime
    source: str
    captured: dt.datetime | None = None
    scaler: int | None = None
    unit: int | None = None
    raw: bytes | None = None

    @property
    def scaled(self) -> Decimal | None:
        return _scaled(self.value, self.scaler)


def _scaled(value: int | float | None, scaler: int | None) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value)).scaleb(scaler or 0)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An operator's word on an alarm: who, when, and what they noted."""

    by: str
    at: dt.datetime
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a meter's logbook (or an alarm of a push).

    ``severity`` and ``category`` are its class (:mod:`sac.eventcodes`: ``alarm``,
    ``warning``, ``info``; ``valve``, ``tamper``...), as the services layer set it from the
    meter's profile; None when nobody did (the store then classes it by the UNI/TS table, and
    an event stored before classes were kept reads None).  An event of severity ``alarm`` is
    an open alarm until an operator acknowledges it.  ``id`` is the store's (None before).
    """

    ldn: str
    logbook: Obis
    code: int
    occurred: dt.datetime
    received: dt.datetime
    source: str
    counter: int | None = None
    severity: str | None = None
    category: str | None = None
    id: int | None = None
    acknowledgement: Acknowledgement | None = None

    @property
    def open_alarm(self) -> bool:
        """An alarm no operator has acknowledged yet."""
        return self.severity == "alarm" and self.acknowledgement is None


@dataclass(frozen=True, slots=True)
class AlarmPage:
    """A page of open alarms, newest first; ``cursor`` continues it (None: the last)."""

    alarms: tuple[Event, ...]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class AlarmCount:
    """The open alarms of one category: how many, on how many meters."""

    category: str
    alarms: int
    meters: int


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """What one session says of a meter, for its row in the meter list.

    ``connected`` is when the SAC received them (its own clock; a spool replay keeps the
    push's receipt time): it moves the last connection forward, and decides which values are
    newer -- they replace the stored ones only if received not earlier, so a late replay
    never hides a newer value and a meter whose clock lags is not ignored.  ``at`` is the
    meter's time of the values (the session's when it gave none), shown next to them.  None
    leaves a value as it is.  ``index`` is the converted-volume index reading.
    """

    ldn: str
    connected: dt.datetime | None = None
    at: dt.datetime | None = None
    index: Reading | None = None
    diagnostic: int | None = None
    battery_value: int | None = None
    battery_unit: int = UNIT_DAY
    valve_state: int | None = None
    address: str | None = None  # the peer address it was heard from (with ``connected``)


@dataclass(frozen=True, slots=True)
class InvocationCounters:
    """A meter's counters for one client: ``ours``, the last of ours reserved (sent or about
    to be); ``proven``, the highest of ours the meter has proven it accepted, by an
    authenticated answer or the FC field of an authenticated frame; ``theirs``, the meter's
    last counter we accepted (None before its first)."""

    ours: int = 0
    proven: int = 0
    theirs: int | None = None


@dataclass(frozen=True, slots=True)
class PeerCounter:
    """The invocation counter of a meter's ciphered APDU whose content an ingest stores."""

    ldn: str
    client_sap: int
    counter: int


@dataclass(frozen=True, slots=True)
class PlanMark:
    """Where a meter stands on one item of its read plan (sac.profiles.readplan): when it was
    last read, the counter it watches as it was then, the newest entry held (a profile's)."""

    ldn: str
    quantity: str
    read_at: dt.datetime
    counter: int | None = None
    newest: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Ingest:
    """What one session (or a batch of them) brings: stored in one transaction.

    ``counters`` are accepted in the same transaction: if one is not newer than the meter's
    last, nothing is stored (ReplayError), so a frame's content and its counter are stored
    together or not at all, and a frame replayed from the spool is never stored twice.
    """

    readings: Sequence[Reading] = ()
    events: Sequence[Event] = ()
    statuses: Sequence[MeterStatus] = ()
    counters: Sequence[PeerCounter] = ()
    # the read plan's items read (with what they read, in the same transaction)
    plan_marks: Sequence[PlanMark] = ()


@dataclass(frozen=True, slots=True)
class IngestResult:
    readings: int  # new readings stored (a reading already held is not stored twice)
    events: int  # new events stored
    pending: frozenset[str] = frozenset()  # LDNs of the pushing meters with commands waiting
    # the pushing meters' read-plan marks, by LDN (their sessions decide what is due)
    plans: Mapping[str, tuple[PlanMark, ...]] = field(default_factory=dict)
    # new alarm events stored, by category (an event already held is not counted again)
    alarms: Mapping[str, int] = field(default_factory=dict)


class CommandState(StrEnum):
    PENDING = "pending"  # queued, waiting for the meter
    SENT = "sent"  # claimed by a session, on its way
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"  # the meter did not come before the deadline
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (CommandState.PENDING, CommandState.SENT)


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    ldn: str
    kind: str
    params: Mapping[str, Any]
    state: CommandState
    requested_by: str
    created: dt.datetime
    expires: dt.datetime | None
    sent: dt.datetime | None
    finished: dt.datetime | None
    attempts: int
    result: str | None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class CommandTransition:
    """One move of a command, with its time."""

    at: dt.datetime
    state: CommandState
    detail: str | None


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    OPERATOR = "operator"  # + meters, keys, commands
    ADMIN = "admin"  # + users

    def may(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    active: bool
    created: dt.datetime
    updated: dt.datetime
    locked_until: dt.datetime | None = None  # signed in wrong too often: no sign-in until


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a change, for the audit trail: a user (or a system) and where from."""

    name: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    address: str | None
    action: str
    target: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: its user, the token its forms carry (CSRF) and its end."""

    user: User
    csrf: str
    expires: dt.datetime
    address: str | None


# what update_meter may change, and what each must be
METER_FIELDS = ("pdr", "system_title", "profile", "address", "allowed_ips", "poll_interval")


@dataclass(frozen=True, slots=True)
class ReadingPage:
    """A page of a readings export, per meter then in capture order; ``cursor`` continues
    it (None: the last page).  The cursor is a position, not an offset: readings stored
    meanwhile in what is already exported do not shift it."""

    readings: tuple[Reading, ...]
    cursor: str | None
    pdrs: Mapping[str, str | None] = field(default_factory=dict)  # each LDN's PDR


class ExportedReading(NamedTuple):
    """A reading of an export with its meter's PDR, for the answers that only write it out
    (the SOAP exports): a tuple, not a :class:`Reading` (10,000 Readings took about 70 ms to
    make, these a fifth of it; issue 23).  The fields are a Reading's, ``obis`` as text."""

    ldn: str
    obis: str
    attribute: int
    value: int | float | None
    raw: bytes | None
    scaler: int | None
    unit: int | None
    captured: dt.datetime | None
    received: dt.datetime
    source: str
    pdr: str | None

    @property
    def scaled(self) -> Decimal | None:
        return _scaled(self.value, self.scaler)


@dataclass(frozen=True, slots=True)
class ExportPage:
    """A page of a readings export as :class:`ExportedReading`; ``cursor`` as a
    :class:`ReadingPage`'s (the same query gives the same cursors)."""

    readings: tuple[ExportedReading, ...]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class MonthStartIndex:
    """A meter's index at a gas month's start, for billing: the last index reading captured
    in the gas day that ends at the month's start (None: the meter gave none then)."""

    ldn: str
    pdr: str | None
    reading: Reading | None


@dataclass(frozen=True, slots=True)
class MonthStartPage:
    """A page of a month-start export, by meter; ``cursor`` continues it (None: the last)."""

    rows: tuple[MonthStartIndex, ...]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events in the order they occurred; ``cursor`` continues it."""

    events: tuple[Event, ...]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A machine client's credential: acts as ``user`` (its role) until revoked.  Only a
    hash of the token is stored; the token itself is shown once, when made."""

    id: int
    name: str
    user: User
    created: dt.datetime
    last_used: dt.datetime | None
    revoked: dt.datetime | None
