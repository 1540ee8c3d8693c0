"""sac.store: the SAC's memory behind one asynchronous interface, on SQLite or PostgreSQL."""

from sac.store.interface import IStore, Store
from sac.store.model import Meter, MeterKeys, MeterState, NewMeter
from sac.store.transactions import Conflict, UnknownMeter

__all__ = [
    "Conflict",
    "IStore",
    "Meter",
    "MeterKeys",
    "MeterState",
    "NewMeter",
    "Store",
    "UnknownMeter",
]
