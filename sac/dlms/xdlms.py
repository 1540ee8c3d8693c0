"""xDLMS APDUs with logical-name referencing: GET, SET, ACTION, DATA-NOTIFICATION, errors.

Each APDU is a frozen value with ``to_bytes()``; :func:`decode_xdlms` turns bytes back into
one.  A result that may be data or an error (GET-Response, ACTION return parameters) holds
either the decoded ``Data`` or a :class:`~sac.dlms.cosem.DataAccessResult`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from sac.dlms.axdr import (
    DEFAULT_LIMITS,
    MALFORMED,
    Array,
    DoubleLongUnsigned,
    Integer,
    Limits,
    LongUnsigned,
    OctetString,
    Structure,
    decode_ber_length,
    decode_data_at,
    encode_ber_length,
    encode_data,
    encoder,
)
from sac.dlms.cosem import ActionResult, DataAccessResult, ServiceError, StateError, code
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime
from sac.dlms.obis import Obis
from sac.errors import DecodeError, EncodeError

__all__ = [
    "NO_VALUE",
    "ActionRequestNormal",
    "ActionResponseNormal",
    "AttributeDescriptor",
    "ConfirmedServiceError",
    "DataNotification",
    "ExceptionResponse",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithDatablock",
    "GetResponseWithList",
    "MethodDescriptor",
    "SelectiveAccess",
    "SetRequestNormal",
    "SetRequestWithDatablock",
    "SetRequestWithFirstDatablock",
    "SetResponseDatablock",
    "SetResponseLastDatablock",
    "SetResponseNormal",
    "decode_xdlms",
    "entry_descriptor",
    "range_descriptor",
]

GET_REQUEST = 0xC0
SET_REQUEST = 0xC1
ACTION_REQUEST = 0xC3
GET_RESPONSE = 0xC4
SET_RESPONSE = 0xC5
ACTION_RESPONSE = 0xC7
DATA_NOTIFICATION = 0x0F
EXCEPTION_RESPONSE = 0xD8
CONFIRMED_SERVICE_ERROR = 0x0E

_DESC = struct.Struct(">H6sb")
_U32 = struct.Struct(">I")


class _NoValue:
    """The absence of an optional Data (distinct from null-data, which is ``None``)."""

    _instance: _NoValue | None = None

    def __new__(cls) -> _NoValue:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Any = _NoValue()


# --- descriptors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    class_id: int
    instance: Obis
    attribute: int

    @encoder
    def to_bytes(self) -> bytes:
        try:
            return _DESC.pack(self.class_id, bytes(self.instance), self.attribute)
        except struct.error as exc:
            raise EncodeError(f"bad attribute descriptor {self}: {exc}") from None

    @classmethod
    def decode_at(cls, buf: bytes, pos: int) -> tuple[AttributeDescriptor, int]:
        if pos + 9 > len(buf):
            raise DecodeError("truncated: attribute descriptor")
        class_id, ln, attr = _DESC.unpack_from(buf, pos)
        return cls(class_id, Obis(ln), attr), pos + 9


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    class_id: int
    instance: Obis
    method: int

    @encoder
    def to_bytes(self) -> bytes:
        try:
            return _DESC.pack(self.class_id, bytes(self.instance), self.method)
        except struct.error as exc:
            raise EncodeError(f"bad method descriptor {self}: {exc}") from None

    @classmethod
    def decode_at(cls, buf: bytes, pos: int) -> tuple[MethodDescriptor, int]:
        if pos + 9 > len(buf):
            raise DecodeError("truncated: method descriptor")
        class_id, ln, method = _DESC.unpack_from(buf, pos)
        return cls(class_id, Obis(ln), method), pos + 9


@dataclass(frozen=True, slots=True)
class SelectiveAccess:
    """Selective access: selector 1 = by range, 2 = by entry, and its parameters (Data)."""

    selector: int
    parameters: Any

    @encoder
    def to_bytes(self) -> bytes:
        if not 0 <= self.selector <= 255:
            raise EncodeError(f"access selector {self.selector} is not a byte")
        return b"\x01" + bytes((self.selector,)) + encode_data(self.parameters)


def range_descriptor(
    restricting: tuple[int, Obis | str, int, int],
    start: Any,
    end: Any,
    selected_values: tuple[tuple[int, Obis | str, int, int], ...] = (),
) -> SelectiveAccess:
    """Selector 1: capture-object definition {class, LN, attribute, data-index}, from, to."""

    def capture_object(c: tuple[int, Obis | str, int, int]) -> Structure:
        class_id, ln, attr, data_index = c
        return Structure(
            (
                LongUnsigned(class_id),
                OctetString(bytes(Obis(ln))),
                Integer(attr),
                LongUnsigned(data_index),
            )
        )

    return SelectiveAccess(
        1,
        Structure(
            (
                capture_object(restricting),
                start,
                end,
                Array(capture_object(c) for c in selected_values),
            )
        ),
    )


def entry_descriptor(
    from_entry: int, to_entry: int = 0, from_value: int = 1, to_value: int = 0
) -> SelectiveAccess:
    """Selector 2: entries from..to (to 0 = the last), columns from..to (to 0 = the last)."""
    return SelectiveAccess(
        2,
        Structure(
            (
                DoubleLongUnsigned(from_entry),
                DoubleLongUnsigned(to_entry),
                LongUnsigned(from_value),
                LongUnsigned(to_value),
            )
        ),
    )


def _access_at(buf: bytes, pos: int, limits: Limits) -> tuple[SelectiveAccess | None, int]:
    if pos >= len(buf):
        raise DecodeError("truncated: access-selection flag missing")
    flag = buf[pos]
    if flag == 0:
        return None, pos + 1
    if flag != 1 or pos + 2 > len(buf):
        raise DecodeError(f"bad access-selection flag 0x{flag:02x}")
    selector = buf[pos + 1]
    params, pos = decode_data_at(buf, pos + 2, limits)
    return SelectiveAccess(selector, params), pos


def _access_bytes(access: SelectiveAccess | None) -> bytes:
    return b"\x00" if access is None else access.to_bytes()


def _iip(value: int) -> bytes:
    if not 0 <= value <= 255:
        raise EncodeError(f"invoke-id-and-priority {value} is not a byte")
    return bytes((value,))


def _octets(raw: bytes) -> bytes:
    return encode_ber_length(len(raw)) + raw


def _octets_at(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, start = decode_ber_length(buf, pos)
    end = start + n
    if end > len(buf):
        raise DecodeError(f"truncated: raw data of {n} bytes, {len(buf) - start} left")
    return bytes(buf[start:end]), end


def _u32_at(buf: bytes, pos: int) -> int:
    if pos + 4 > len(buf):
        raise DecodeError("truncated: u32 missing")
    value: int = _U32.unpack_from(buf, pos)[0]
    return value


# --- GET ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    access: SelectiveAccess | None = None

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc0\x01"
            + _iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + _access_bytes(self.access)
        )


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    invoke_id_and_priority: int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc0\x02" + _iip(self.invoke_id_and_priority) + _u32(self.block_number)


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id_and_priority: int
    items: tuple[tuple[AttributeDescriptor, SelectiveAccess | None], ...]

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc0\x03"
            + _iip(self.invoke_id_and_priority)
            + encode_ber_length(len(self.items))
            + b"".join(d.to_bytes() + _access_bytes(a) for d, a in self.items)
        )


def _result_bytes(result: Any) -> bytes:
    if isinstance(result, DataAccessResult):
        return b"\x01" + bytes((result,))
    return b"\x00" + encode_data(result)


def _result_at(buf: bytes, pos: int, limits: Limits) -> tuple[Any, int]:
    if pos >= len(buf):
        raise DecodeError("truncated: get-data-result missing")
    choice = buf[pos]
    if choice == 0:
        return decode_data_at(buf, pos + 1, limits)
    if choice == 1:
        if pos + 2 > len(buf):
            raise DecodeError("truncated: data-access-result missing")
        return code(DataAccessResult, buf[pos + 1]), pos + 2
    raise DecodeError(f"bad get-data-result choice {choice}")


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    """``result`` is the Data, or a DataAccessResult when the meter refused."""

    invoke_id_and_priority: int
    result: Any

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc4\x01" + _iip(self.invoke_id_and_priority) + _result_bytes(self.result)


@dataclass(frozen=True, slots=True)
class GetResponseWithDatablock:
    """One block of a long GET: ``raw`` holds a slice of the encoded Data, or ``error``."""

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw: bytes = b""
    error: DataAccessResult | int | None = None

    @encoder
    def to_bytes(self) -> bytes:
        head = (
            b"\xc4\x02"
            + _iip(self.invoke_id_and_priority)
            + (b"\x01" if self.last_block else b"\x00")
            + _u32(self.block_number)
        )
        if self.error is not None:
            return head + b"\x01" + bytes((int(self.error),))
        return head + b"\x00" + _octets(self.raw)


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id_and_priority: int
    results: tuple[Any, ...]

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc4\x03"
            + _iip(self.invoke_id_and_priority)
            + encode_ber_length(len(self.results))
            + b"".join(map(_result_bytes, self.results))
        )


# --- SET ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    value: Any
    access: SelectiveAccess | None = None

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc1\x01"
            + _iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + _access_bytes(self.access)
            + encode_data(self.value)
        )


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDatablock:
    invoke_id_and_priority: int
    attribute: AttributeDescriptor
    last_block: bool
    block_number: int
    raw: bytes
    access: SelectiveAccess | None = None

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc1\x02"
            + _iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + _access_bytes(self.access)
            + (b"\x01" if self.last_block else b"\x00")
            + _u32(self.block_number)
            + _octets(self.raw)
        )


@dataclass(frozen=True, slots=True)
class SetRequestWithDatablock:
    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw: bytes

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc1\x03"
            + _iip(self.invoke_id_and_priority)
            + (b"\x01" if self.last_block else b"\x00")
            + _u32(self.block_number)
            + _octets(self.raw)
        )


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id_and_priority: int
    result: DataAccessResult | int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc5\x01" + _iip(self.invoke_id_and_priority) + bytes((int(self.result),))


@dataclass(frozen=True, slots=True)
class SetResponseDatablock:
    invoke_id_and_priority: int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc5\x02" + _iip(self.invoke_id_and_priority) + _u32(self.block_number)


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablock:
    invoke_id_and_priority: int
    result: DataAccessResult | int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc5\x03"
            + _iip(self.invoke_id_and_priority)
            + bytes((int(self.result),))
            + _u32(self.block_number)
        )


# --- ACTION ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionRequestNormal:
    """``parameters`` is the Data to pass, or NO_VALUE for a method without one."""

    invoke_id_and_priority: int
    method: MethodDescriptor
    parameters: Any = NO_VALUE

    @encoder
    def to_bytes(self) -> bytes:
        params = b"\x00" if self.parameters is NO_VALUE else b"\x01" + encode_data(self.parameters)
        return b"\xc3\x01" + _iip(self.invoke_id_and_priority) + self.method.to_bytes() + params


@dataclass(frozen=True, slots=True)
class ActionResponseNormal:
    """``return_parameters``: NO_VALUE, the Data returned, or a DataAccessResult."""

    invoke_id_and_priority: int
    result: ActionResult | int
    return_parameters: Any = NO_VALUE

    @encoder
    def to_bytes(self) -> bytes:
        ret = (
            b"\x00"
            if self.return_parameters is NO_VALUE
            else b"\x01" + _result_bytes(self.return_parameters)
        )
        return b"\xc7\x01" + _iip(self.invoke_id_and_priority) + bytes((int(self.result),)) + ret


# --- notifications and errors ---------------------------------------------------------------


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
        dt = b"\x00" if self.date_time is None else _octets(self.date_time.to_bytes())
        return b"\x0f" + _u32(self.long_invoke_id_and_priority) + dt + encode_data(self.body)

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
            out += _u32(self.invocation_counter or 0)
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


def _u32(value: int) -> bytes:
    try:
        return _U32.pack(value)
    except struct.error:
        raise EncodeError(f"{value} is not a u32") from None


# --- decoding -------------------------------------------------------------------------------


def _need(buf: bytes, n: int, what: str) -> None:
    if len(buf) < n:
        raise DecodeError(f"truncated: {what}")


def _decode_get_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 3, "get-request header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = _access_at(buf, pos, limits)
        return GetRequestNormal(iip, desc, access), pos
    if kind == 2:
        return GetRequestNext(iip, _u32_at(buf, 3)), 7
    if kind == 3:
        count, pos = decode_ber_length(buf, 3)
        if count * 10 > len(buf) - pos:
            raise DecodeError(f"get-request-with-list of {count} items cannot fit")
        items = []
        for _ in range(count):
            desc, pos = AttributeDescriptor.decode_at(buf, pos)
            access, pos = _access_at(buf, pos, limits)
            items.append((desc, access))
        return GetRequestWithList(iip, tuple(items)), pos
    raise DecodeError(f"unknown get-request choice {kind}")


def _decode_get_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 3, "get-response header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        result, pos = _result_at(buf, 3, limits)
        return GetResponseNormal(iip, result), pos
    if kind == 2:
        _need(buf, 9, "get-response-with-datablock header")
        last = buf[3]
        if last > 1:
            raise DecodeError(f"bad last-block flag {last}")
        block = _U32.unpack_from(buf, 4)[0]
        choice = buf[8]
        if choice == 0:
            raw, pos = _octets_at(buf, 9)
            return GetResponseWithDatablock(iip, bool(last), block, raw), pos
        if choice == 1:
            _need(buf, 10, "data-access-result")
            err = code(DataAccessResult, buf[9])
            return GetResponseWithDatablock(iip, bool(last), block, b"", err), 10
        raise DecodeError(f"bad datablock result choice {choice}")
    if kind == 3:
        count, pos = decode_ber_length(buf, 3)
        if count > len(buf) - pos:
            raise DecodeError(f"get-response-with-list of {count} items cannot fit")
        results = []
        for _ in range(count):
            result, pos = _result_at(buf, pos, limits)
            results.append(result)
        return GetResponseWithList(iip, tuple(results)), pos
    raise DecodeError(f"unknown get-response choice {kind}")


def _block_at(buf: bytes, pos: int) -> tuple[bool, int, bytes, int]:
    _need(buf, pos + 5, "datablock header")
    last = buf[pos]
    if last > 1:
        raise DecodeError(f"bad last-block flag {last}")
    block = _U32.unpack_from(buf, pos + 1)[0]
    raw, end = _octets_at(buf, pos + 5)
    return bool(last), block, raw, end


def _decode_set_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 3, "set-request header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = _access_at(buf, pos, limits)
        value, pos = decode_data_at(buf, pos, limits)
        return SetRequestNormal(iip, desc, value, access), pos
    if kind == 2:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = _access_at(buf, pos, limits)
        last, block, raw, pos = _block_at(buf, pos)
        return SetRequestWithFirstDatablock(iip, desc, last, block, raw, access), pos
    if kind == 3:
        last, block, raw, pos = _block_at(buf, 3)
        return SetRequestWithDatablock(iip, last, block, raw), pos
    raise DecodeError(f"unsupported set-request choice {kind}")


def _decode_set_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 4, "set-response")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        return SetResponseNormal(iip, code(DataAccessResult, buf[3])), 4
    if kind == 2:
        return SetResponseDatablock(iip, _u32_at(buf, 3)), 7
    if kind == 3:
        return SetResponseLastDatablock(iip, code(DataAccessResult, buf[3]), _u32_at(buf, 4)), 8
    raise DecodeError(f"unsupported set-response choice {kind}")


def _decode_action_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 3, "action-request header")
    kind, iip = buf[1], buf[2]
    if kind != 1:
        raise DecodeError(f"unsupported action-request choice {kind}")
    desc, pos = MethodDescriptor.decode_at(buf, 3)
    _need(buf, pos + 1, "action parameters flag")
    flag = buf[pos]
    if flag == 0:
        return ActionRequestNormal(iip, desc), pos + 1
    if flag != 1:
        raise DecodeError(f"bad parameters flag {flag}")
    params, pos = decode_data_at(buf, pos + 1, limits)
    return ActionRequestNormal(iip, desc, params), pos


def _decode_action_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 5, "action-response")
    kind, iip = buf[1], buf[2]
    if kind != 1:
        raise DecodeError(f"unsupported action-response choice {kind}")
    result = code(ActionResult, buf[3])
    flag = buf[4]
    if flag == 0:
        return ActionResponseNormal(iip, result), 5
    if flag != 1:
        raise DecodeError(f"bad return-parameters flag {flag}")
    ret, pos = _result_at(buf, 5, limits)
    return ActionResponseNormal(iip, result, ret), pos


_DN_TIME: dict[int, type[CosemDateTime] | type[CosemDate] | type[CosemTime]] = {
    12: CosemDateTime,
    5: CosemDate,
    4: CosemTime,
}


def _decode_data_notification(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 6, "data-notification header")
    liip = _U32.unpack_from(buf, 1)[0]
    n = buf[5]
    if n == 0:
        dt = None
        pos = 6
    else:
        kind = _DN_TIME.get(n)
        if kind is None:
            raise DecodeError(f"data-notification time of {n} bytes (0, 4, 5 or 12 expected)")
        pos = 6 + n
        _need(buf, pos, "data-notification time")
        dt = kind.from_bytes(bytes(buf[6:pos]))
    end = len(buf)
    if end - pos > 2 and buf[pos] == 0x09 and buf[pos + 1] == end - pos - 2 < 0x80:
        # the common push: one short octet-string (a compact buffer)
        return DataNotification(liip, dt, OctetString(buf[pos + 2 :])), end
    body, pos = decode_data_at(buf, pos, limits)
    return DataNotification(liip, dt, body), pos


def _decode_exception(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 3, "exception-response")
    state = code(StateError, buf[1])
    service = code(ServiceError, buf[2])
    if service == ServiceError.INVOCATION_COUNTER_ERROR and len(buf) >= 7:
        return ExceptionResponse(state, service, _U32.unpack_from(buf, 3)[0]), 7
    return ExceptionResponse(state, service), 3


def _decode_cse(buf: bytes, limits: Limits) -> tuple[Any, int]:
    _need(buf, 4, "confirmed-service-error")
    return ConfirmedServiceError(buf[1], buf[2], buf[3]), 4


_XDLMS_DECODERS = {
    GET_REQUEST: _decode_get_request,
    GET_RESPONSE: _decode_get_response,
    SET_REQUEST: _decode_set_request,
    SET_RESPONSE: _decode_set_response,
    ACTION_REQUEST: _decode_action_request,
    ACTION_RESPONSE: _decode_action_response,
    DATA_NOTIFICATION: _decode_data_notification,
    EXCEPTION_RESPONSE: _decode_exception,
    CONFIRMED_SERVICE_ERROR: _decode_cse,
}


def decode_xdlms(buf: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one whole unciphered xDLMS APDU (every byte must belong to it)."""
    if not buf:
        raise DecodeError("truncated: empty APDU")
    decoder = _XDLMS_DECODERS.get(buf[0])
    if decoder is None:
        raise DecodeError(f"0x{buf[0]:02x} is not a known xDLMS APDU")
    try:
        apdu, end = decoder(buf, limits)
    except MALFORMED as exc:
        raise DecodeError(f"malformed APDU: {exc}") from None
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} bytes left after the APDU")
    return apdu
