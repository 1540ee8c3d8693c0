"""xDLMS APDUs with logical-name referencing: GET, SET, ACTION, DATA-NOTIFICATION, errors.

Each APDU is a frozen value with ``to_bytes()``; :func:`decode_xdlms` turns bytes back into
one.  A result that may be data or an error (GET-Response, ACTION return parameters) holds
either the decoded ``Data`` or a :class:`~sac.dlms.cosem.DataAccessResult`.

The GET, SET and ACTION APDUs are here; the descriptors and selective access are in
:mod:`sac.dlms.descriptors`, DATA-NOTIFICATION and the error APDUs in
:mod:`sac.dlms.notification`.  This module re-exports them: callers import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sac.dlms.axdr import (
    DEFAULT_LIMITS,
    MALFORMED,
    Limits,
    decode_ber_length,
    decode_data_at,
    encode_ber_length,
    encode_data,
    encoder,
)
from sac.dlms.cosem import ActionResult, DataAccessResult, code
from sac.dlms.descriptors import (
    NO_VALUE,
    U32,
    AttributeDescriptor,
    MethodDescriptor,
    SelectiveAccess,
    access_at,
    access_bytes,
    entry_descriptor,
    iip,
    need,
    octets,
    octets_at,
    range_descriptor,
    u32,
    u32_at,
)
from sac.dlms.notification import (
    CONFIRMED_SERVICE_ERROR,
    DATA_NOTIFICATION,
    EXCEPTION_RESPONSE,
    ConfirmedServiceError,
    DataNotification,
    ExceptionResponse,
    decode_confirmed_service_error,
    decode_data_notification,
    decode_exception_response,
)
from sac.errors import DecodeError

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
            + iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + access_bytes(self.access)
        )


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    invoke_id_and_priority: int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc0\x02" + iip(self.invoke_id_and_priority) + u32(self.block_number)


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id_and_priority: int
    items: tuple[tuple[AttributeDescriptor, SelectiveAccess | None], ...]

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc0\x03"
            + iip(self.invoke_id_and_priority)
            + encode_ber_length(len(self.items))
            + b"".join(d.to_bytes() + access_bytes(a) for d, a in self.items)
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
        return b"\xc4\x01" + iip(self.invoke_id_and_priority) + _result_bytes(self.result)


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
            + iip(self.invoke_id_and_priority)
            + (b"\x01" if self.last_block else b"\x00")
            + u32(self.block_number)
        )
        if self.error is not None:
            return head + b"\x01" + bytes((int(self.error),))
        return head + b"\x00" + octets(self.raw)


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id_and_priority: int
    results: tuple[Any, ...]

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc4\x03"
            + iip(self.invoke_id_and_priority)
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
            + iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + access_bytes(self.access)
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
            + iip(self.invoke_id_and_priority)
            + self.attribute.to_bytes()
            + access_bytes(self.access)
            + (b"\x01" if self.last_block else b"\x00")
            + u32(self.block_number)
            + octets(self.raw)
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
            + iip(self.invoke_id_and_priority)
            + (b"\x01" if self.last_block else b"\x00")
            + u32(self.block_number)
            + octets(self.raw)
        )


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id_and_priority: int
    result: DataAccessResult | int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc5\x01" + iip(self.invoke_id_and_priority) + bytes((int(self.result),))


@dataclass(frozen=True, slots=True)
class SetResponseDatablock:
    invoke_id_and_priority: int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return b"\xc5\x02" + iip(self.invoke_id_and_priority) + u32(self.block_number)


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablock:
    invoke_id_and_priority: int
    result: DataAccessResult | int
    block_number: int

    @encoder
    def to_bytes(self) -> bytes:
        return (
            b"\xc5\x03"
            + iip(self.invoke_id_and_priority)
            + bytes((int(self.result),))
            + u32(self.block_number)
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
        return b"\xc3\x01" + iip(self.invoke_id_and_priority) + self.method.to_bytes() + params


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
        return b"\xc7\x01" + iip(self.invoke_id_and_priority) + bytes((int(self.result),)) + ret


# --- decoding -------------------------------------------------------------------------------


def _decode_get_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 3, "get-request header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = access_at(buf, pos, limits)
        return GetRequestNormal(iip, desc, access), pos
    if kind == 2:
        return GetRequestNext(iip, u32_at(buf, 3)), 7
    if kind == 3:
        count, pos = decode_ber_length(buf, 3)
        if count * 10 > len(buf) - pos:
            raise DecodeError(f"get-request-with-list of {count} items cannot fit")
        items = []
        for _ in range(count):
            desc, pos = AttributeDescriptor.decode_at(buf, pos)
            access, pos = access_at(buf, pos, limits)
            items.append((desc, access))
        return GetRequestWithList(iip, tuple(items)), pos
    raise DecodeError(f"unknown get-request choice {kind}")


def _decode_get_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 3, "get-response header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        result, pos = _result_at(buf, 3, limits)
        return GetResponseNormal(iip, result), pos
    if kind == 2:
        need(buf, 9, "get-response-with-datablock header")
        last = buf[3]
        if last > 1:
            raise DecodeError(f"bad last-block flag {last}")
        block = U32.unpack_from(buf, 4)[0]
        choice = buf[8]
        if choice == 0:
            raw, pos = octets_at(buf, 9)
            return GetResponseWithDatablock(iip, bool(last), block, raw), pos
        if choice == 1:
            need(buf, 10, "data-access-result")
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
    need(buf, pos + 5, "datablock header")
    last = buf[pos]
    if last > 1:
        raise DecodeError(f"bad last-block flag {last}")
    block = U32.unpack_from(buf, pos + 1)[0]
    raw, end = octets_at(buf, pos + 5)
    return bool(last), block, raw, end


def _decode_set_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 3, "set-request header")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = access_at(buf, pos, limits)
        value, pos = decode_data_at(buf, pos, limits)
        return SetRequestNormal(iip, desc, value, access), pos
    if kind == 2:
        desc, pos = AttributeDescriptor.decode_at(buf, 3)
        access, pos = access_at(buf, pos, limits)
        last, block, raw, pos = _block_at(buf, pos)
        return SetRequestWithFirstDatablock(iip, desc, last, block, raw, access), pos
    if kind == 3:
        last, block, raw, pos = _block_at(buf, 3)
        return SetRequestWithDatablock(iip, last, block, raw), pos
    raise DecodeError(f"unsupported set-request choice {kind}")


def _decode_set_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 4, "set-response")
    kind, iip = buf[1], buf[2]
    if kind == 1:
        return SetResponseNormal(iip, code(DataAccessResult, buf[3])), 4
    if kind == 2:
        return SetResponseDatablock(iip, u32_at(buf, 3)), 7
    if kind == 3:
        return SetResponseLastDatablock(iip, code(DataAccessResult, buf[3]), u32_at(buf, 4)), 8
    raise DecodeError(f"unsupported set-response choice {kind}")


def _decode_action_request(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 3, "action-request header")
    kind, iip = buf[1], buf[2]
    if kind != 1:
        raise DecodeError(f"unsupported action-request choice {kind}")
    desc, pos = MethodDescriptor.decode_at(buf, 3)
    need(buf, pos + 1, "action parameters flag")
    flag = buf[pos]
    if flag == 0:
        return ActionRequestNormal(iip, desc), pos + 1
    if flag != 1:
        raise DecodeError(f"bad parameters flag {flag}")
    params, pos = decode_data_at(buf, pos + 1, limits)
    return ActionRequestNormal(iip, desc, params), pos


def _decode_action_response(buf: bytes, limits: Limits) -> tuple[Any, int]:
    need(buf, 5, "action-response")
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


_XDLMS_DECODERS = {
    GET_REQUEST: _decode_get_request,
    GET_RESPONSE: _decode_get_response,
    SET_REQUEST: _decode_set_request,
    SET_RESPONSE: _decode_set_response,
    ACTION_REQUEST: _decode_action_request,
    ACTION_RESPONSE: _decode_action_response,
    DATA_NOTIFICATION: decode_data_notification,
    EXCEPTION_RESPONSE: decode_exception_response,
    CONFIRMED_SERVICE_ERROR: decode_confirmed_service_error,
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
