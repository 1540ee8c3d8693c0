"""Rows to objects: the columns several entities' statements select, and how each backend's
rows become the model's dataclasses (a meter in the meter list and in a bulk change, a
reading in its history and in an export, a user behind a session and behind a token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sac.dlms import Obis
from sac.store.model import Meter, MeterState, Reading, Role, User
from sac.store.sql import number, stamp, when

__all__ = [
    "METER_COLUMNS",
    "READING_VALUES",
    "USER_COLUMNS",
    "meter_row",
    "reading_row",
    "user_row",
]

METER_COLUMNS = (
    "id, ldn, pdr, system_title, profile, address, allowed_ips, state, created, updated,"
    " last_connection, index_value, index_scaler, index_unit, index_captured, diagnostic,"
    " battery_value, battery_unit, valve_state, status_at, poll_interval"
)


def meter_row(row: Sequence[Any]) -> Meter:
    title = row[3]
    return Meter(
        id=row[0],
        ldn=row[1],
        pdr=row[2],
        system_title=bytes(title) if title is not None else None,
        profile=row[4],
        address=row[5],
        allowed_ips=tuple(ip for ip in row[6].split(",") if ip),
        state=MeterState(row[7]),
        created=stamp(row[8]),
        updated=stamp(row[9]),
        last_connection=when(row[10]),
        index_value=number(row[11]),
        index_scaler=row[12],
        index_unit=row[13],
        index_captured=when(row[14]),
        diagnostic=row[15],
        battery_value=row[16],
        battery_unit=row[17],
        valve_state=row[18],
        status_at=when(row[19]),
        poll_interval=row[20],
    )


READING_VALUES = "r.value, r.raw, r.scaler, r.unit, r.captured, r.received, r.source"


def reading_row(ldn: str, obis: Obis, attribute: int, row: Sequence[Any]) -> Reading:
    """A row of :data:`READING_VALUES` as a Reading."""
    value, raw, scaler, unit, captured, received, source = row
    return Reading(
        ldn,
        obis,
        attribute,
        number(value),
        stamp(received),
        source,
        when(captured),
        scaler,
        unit,
        bytes(raw) if raw is not None else None,
    )


USER_COLUMNS = "id, name, role, active, created, updated, locked_until"


def user_row(row: Sequence[Any]) -> User:
    return User(
        row[0],
        row[1],
        Role(row[2]),
        bool(row[3]),
        stamp(row[4]),
        stamp(row[5]),
        when(row[6]),
    )
