"""sac.store: the SAC's memory behind one asynchronous interface, on SQLite or PostgreSQL."""

from sac.store.interface import IStore, Store
from sac.store.model import (
    Actor,
    AuditEntry,
    Command,
    CommandState,
    CommandTransition,
    Event,
    Ingest,
    IngestResult,
    Meter,
    MeterKeys,
    MeterPage,
    MeterState,
    MeterStatus,
    NewMeter,
    PeerCounter,
    Reading,
    Role,
    User,
)
from sac.store.operations import CommandStateError, UnknownCommand, UnknownUser
from sac.store.transactions import Conflict, KeyImportError, UnknownMeter

__all__ = [
    "Actor",
    "AuditEntry",
    "Command",
    "CommandState",
    "CommandStateError",
    "CommandTransition",
    "Conflict",
    "Event",
    "IStore",
    "Ingest",
    "IngestResult",
    "KeyImportError",
    "Meter",
    "MeterKeys",
    "MeterPage",
    "MeterState",
    "MeterStatus",
    "NewMeter",
    "PeerCounter",
    "Reading",
    "Role",
    "Store",
    "UnknownCommand",
    "UnknownMeter",
    "UnknownUser",
    "User",
]
