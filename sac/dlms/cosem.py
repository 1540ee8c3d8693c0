"""COSEM enumerations: interface classes, result codes, units."""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

E = TypeVar("E", bound=IntEnum)

__all__ = [
    "ActionResult",
    "DataAccessResult",
    "InterfaceClass",
    "ServiceError",
    "StateError",
    "Unit",
    "code",
    "result_words",
]


class InterfaceClass(IntEnum):
    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    PROFILE_GENERIC = 7
    CLOCK = 8
    SCRIPT_TABLE = 9
    SPECIAL_DAYS_TABLE = 11
    ASSOCIATION_LN = 15
    SAP_ASSIGNMENT = 17
    IMAGE_TRANSFER = 18
    REGISTER_MONITOR = 21
    SINGLE_ACTION_SCHEDULE = 22
    PUSH_SETUP = 40
    TCP_UDP_SETUP = 41
    COMPACT_DATA = 62
    SECURITY_SETUP = 64
    PARAMETER_MONITOR = 65
    DISCONNECT_CONTROL = 70
    UNITS_TARIFF_PLAN = 8192


class _Code(IntEnum):
    """Result codes: a code the standard does not name (vendors add their own) is still one
    of these, named ``CODE_<n>``, so an error never passes for data."""

    @classmethod
    def _missing_(cls, value: object) -> _Code | None:
        if isinstance(value, int) and 0 <= value <= 255:
            member = int.__new__(cls, value)
            member._name_ = f"CODE_{value}"
            member._value_ = value
            return member
        return None


class DataAccessResult(_Code):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


# what a data-access-result or action-result means, for people (Blue Book, the meaning of
# each code); a code not here is named by its number
RESULT_WORDS = {
    1: "the meter reports a hardware fault",
    2: "the meter cannot do it now: try again later",
    3: "this client may not read or write it",
    4: "the meter has no such object",
    9: "the object is not of that interface class",
    11: "the object is not available now",
    12: "the meter does not take a value of that type or shape",
    13: "the value is outside what the meter accepts",
    14: "the data block is unavailable",
    15: "the long transfer was aborted",
    19: "a block number was out of sequence",
    250: "the meter refused it for a reason it does not name",
}


def result_words(result: int) -> str:
    """A data-access-result or action-result in words."""
    return RESULT_WORDS.get(int(result), f"the meter refused it with result code {int(result)}")


class ActionResult(_Code):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


class StateError(_Code):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(_Code):
    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


class Unit(IntEnum):
    """DLMS units (Blue Book table of units), the ones gas meters use."""

    YEAR = 1
    MONTH = 2
    WEEK = 3
    DAY = 4
    HOUR = 5
    MINUTE = 6
    SECOND = 7
    DEGREE = 8
    DEGREE_CELSIUS = 9
    CURRENCY = 10
    METRE = 11
    METRE_PER_SECOND = 12
    CUBIC_METRE = 13
    CORRECTED_CUBIC_METRE = 14
    CUBIC_METRE_PER_HOUR = 15
    CORRECTED_CUBIC_METRE_PER_HOUR = 16
    CUBIC_METRE_PER_DAY = 17
    CORRECTED_CUBIC_METRE_PER_DAY = 18
    LITRE = 19
    KILOGRAM = 20
    PASCAL = 22
    BAR = 23
    WATT_HOUR = 30
    KELVIN = 52
    PERCENTAGE = 56
    AMPERE_HOUR = 57
    NO_UNIT = 255


def code(enum: type[E], value: int) -> E | int:
    """``enum(value)`` when the code is known, else the plain int (vendors add codes)."""
    try:
        return enum(value)
    except ValueError:
        return value
