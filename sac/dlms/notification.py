"""The xDLMS APDUs outside the GET, SET and ACTION pairs: DATA-NOTIFICATION (the meter's
push) and the two errors a peer answers with (EXCEPTION-RESPONSE, confirmed-service-error).

:func:`sac.dlms.xdlms.decode_xdlms` decodes them, and :mod:`sac.dlms.xdlms` re-exports them
(callers import them from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sac.dlms.axdr import Limits, OctetString, decode_data_at, encode_data, encoder
from sac.dlms.cosem import ServiceError, StateError, code
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.descriptors import U32, need, octets, u32
from sac.errors import DecodeError, EncodeError

__all__ = ["ConfirmedServiceError", "DataNotification", "ExceptionResponse"]

DATA_NOTIFICATION = 0x0F
EXCEPTION_RESPONSE = 0xD8
CONFIRMED_SERVICE_ERROR = 0x0E


@dataclass(frozen=True, slots=True)
class DataNotification:
    """DATA-NOTIFICATION: long invoke id and priority (u32), optional time, body (Data).

    On the wire the time is an octet-string: ``00`` when absent, ``0C`` + a date-time (a
    5-byte date or a 4-byte time is also accepted).
    """

    long_invoke_id_and_priority: int
    date_time: CosemDateTime | CosemDate | CosemTime | None
    body: Any

    @encoder
    def to_bytes(self) -> bytes:
        dt = b"\x00" if self.date_time is None else octets(self.date_time.to_bytes())
        return b"\x0f" + u32(self.long_invoke_id_and_priority) + dt + encode_data(self.body)

    @property
    def invoke_id(self) -> int:
        return self.long_invoke_id_and_priority & 0xFFFFFF


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    state_error: StateError | int
    service_error: ServiceError | int
    invocation_counter: int | None = None

    @encoder
    def to_bytes(self) -> bytes:
        out = b"\xd8" + bytes((int(self.state_error), int(self.service_error)))
        if self.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            out += u32(self.invocation_counter or 0)
        return out


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError:
    """``0E <service> <error type> <value>``, e.g. initiateError / initiate / too-low."""

    service: int
    error_type: int
    value: int

    @encoder
    def to_bytes(self) -> bytes:
        try:
            return bytes((CONFIRMED_SERVICE_ERROR, self.service, self.error_type, self.value))
        except ValueError as exc:
            raise EncodeError(f"bad confirmed-service-error {self}") from exc


# --- decoding -------------------------------------------------------------------------------

_DN_TIME: dict[int, type[CosemDateTime] | type[CosemDate] | type[CosemTime]] = {
    12: CosemDateTime,
    5: CosemDate,
    4: CosemTime,
}


def decode_data_notification(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 6, "data-notification header")
    liip = U32.unpack_from(buf, 1)[0]
    n = buf[5]
    if n == 0:
        dt = None
        pos = 6
    else:
        kind = _DN_TIME.get(n)
        if kind is None:
            raise DecodeError(f"data-notification time of {n} bytes (0, 4, 5 or 12 expected)")
        pos = 6 + n
        need(buf, pos, "data-notification time")
        dt = kind.from_bytes(bytes(buf[6:pos]))
    end = len(buf)
    if end - pos > 2 and buf[pos] == 0x09 and buf[pos + 1] == end - pos - 2 < 0x80:
        # the common push: one short octet-string (a compact buffer)
        return DataNotification(liip, dt, OctetString(buf[pos + 2 :])), end
    body, pos = decode_data_at(buf, pos, limits)
    return DataNotification(liip, dt, body), pos


def decode_exception_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 3, "exception-response")
    state = code(StateError, buf[1])
    service = code(ServiceError, buf[2])
    if service == ServiceError.INVOCATION_COUNTER_ERROR and len(buf) >= 7:
        return ExceptionResponse(state, service, U32.unpack_from(buf, 3)[0]), 7
    return ExceptionResponse(state, service), 3


def decode_confirmed_service_error(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 4, "confirmed-service-error")
    return ConfirmedServiceError(buf[1], buf[2], buf[3]), 4
