"""sac.store: the SAC's memory behind one asynchronous interface, on SQLite or PostgreSQL."""

from sac.store.interface import IStore, Store
from sac.store.model import Meter, MeterKeys, MeterState, NewMeter, Reading
from sac.store.transactions import Conflict, KeyImportError, UnknownMeter

__all__ = [
    "Conflict",
    "IStore",
    "KeyImportError",
    "Meter",
    "MeterKeys",
    "MeterState",
    "NewMeter",
    "Reading",
    "Store",
    "UnknownMeter",
]
