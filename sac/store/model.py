"""The store's domain objects: what the store hands out, never raw rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from sac.dlms import Obis

__all__ = ["Meter", "MeterKeys", "MeterState", "NewMeter", "Reading"]


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

    def __post_init__(self) -> None:
        if len(self.ldn) != 16 or not self.ldn.isascii() or not self.ldn.isprintable():
            raise ValueError(f"an LDN is 16 printable ASCII characters, not {self.ldn!r}")
        if self.system_title is not None and len(self.system_title) != 8:
            raise ValueError("a system title is 8 bytes")


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
        if self.value is None:
            return None
        return Decimal(str(self.value)).scaleb(self.scaler or 0)
