"""What the association machines report: frozen events, one per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sac.dlms.acse import AARE, AARQ, RLRE, RLRQ
from sac.dlms.xdlms import (
    AttributeDescriptor,
    DataNotification,
    MethodDescriptor,
    SelectiveAccess,
)
from sac.errors import RemoteProtocolError

__all__ = [
    "ActionCompleted",
    "ActionRequested",
    "AssociationAccepted",
    "AssociationRejected",
    "AssociationRequested",
    "Event",
    "GetCompleted",
    "GetListCompleted",
    "GetRequested",
    "NotificationReceived",
    "ReleaseRequested",
    "Released",
    "RequestFailed",
    "SetCompleted",
    "SetRequested",
]


class Event:
    """Base of every event."""

    __slots__ = ()


# --- client side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationAccepted(Event):
    aare: AARE


@dataclass(frozen=True, slots=True)
class AssociationRejected(Event):
    aare: AARE

    @property
    def diagnostic(self) -> int:
        return self.aare.diagnostic


@dataclass(frozen=True, slots=True)
class Released(Event):
    """The association is released.  ``quirk`` says what was wrong with the meter's release
    answer when it was not a well-formed RLRE (its content is not used, so the session goes
    on)."""

    rlre: RLRE | None
    quirk: str | None = None


@dataclass(frozen=True, slots=True)
class GetCompleted(Event):
    """``result``: the Data read, or the meter's DataAccessResult."""

    invoke_id: int
    attribute: AttributeDescriptor
    result: Any


@dataclass(frozen=True, slots=True)
class GetListCompleted(Event):
    invoke_id: int
    attributes: tuple[AttributeDescriptor, ...]
    results: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SetCompleted(Event):
    invoke_id: int
    attribute: AttributeDescriptor
    result: Any


@dataclass(frozen=True, slots=True)
class ActionCompleted(Event):
    """``return_parameters``: NO_VALUE, the returned Data, or a DataAccessResult."""

    invoke_id: int
    method: MethodDescriptor
    result: Any
    return_parameters: Any


@dataclass(frozen=True, slots=True)
class RequestFailed(Event):
    """A request that will get no normal answer (exception-response, error, abort)."""

    invoke_id: int
    error: RemoteProtocolError


@dataclass(frozen=True, slots=True)
class NotificationReceived(Event):
    notification: DataNotification


# --- server side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationRequested(Event):
    aarq: AARQ


@dataclass(frozen=True, slots=True)
class ReleaseRequested(Event):
    rlrq: RLRQ | None


@dataclass(frozen=True, slots=True)
class GetRequested(Event):
    attribute: AttributeDescriptor
    access: SelectiveAccess | None


@dataclass(frozen=True, slots=True)
class SetRequested(Event):
    attribute: AttributeDescriptor
    value: Any


@dataclass(frozen=True, slots=True)
class ActionRequested(Event):
    method: MethodDescriptor
    parameters: Any
