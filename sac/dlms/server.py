"""The server (meter) side of a DLMS association, sans-IO.

:class:`ServerAssociation` answers one client SAP on behalf of a :class:`CosemModel`, the
object set of a logical device.  It accepts or rejects AARQs (explicit associations) or starts
associated (pre-established), opens ciphered requests and protects its answers, rejects stale
invocation counters with the expected one, splits long GET answers into blocks, gathers SET
blocks, and answers RLRQ.  Like the client machine it does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sac.dlms.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    ApplicationContext,
    AssociationResult,
    InitiateRequest,
    InitiateResponse,
)
from sac.dlms.apdu import decode_apdu
from sac.dlms.association import CIPHER_OVERHEAD, DEFAULT_CONFORMANCE, WrapperEndpoint
from sac.dlms.axdr import DEFAULT_LIMITS, Limits, decode_data, encode_data
from sac.dlms.cosem import ActionResult, DataAccessResult, ServiceError, StateError
from sac.dlms.cosemtime import CosemDateTime
from sac.dlms.events import (
    ActionRequested,
    AssociationRequested,
    Event,
    GetRequested,
    ReleaseRequested,
    SetRequested,
)
from sac.dlms.security import CipheredApdu, SecurityContext
from sac.dlms.xdlms import (
    ActionRequestNormal,
    ActionResponseNormal,
    AttributeDescriptor,
    ConfirmedServiceError,
    DataNotification,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDatablock,
    GetResponseWithList,
    MethodDescriptor,
    SelectiveAccess,
    SetRequestNormal,
    SetRequestWithDatablock,
    SetRequestWithFirstDatablock,
    SetResponseDatablock,
    SetResponseLastDatablock,
    SetResponseNormal,
)
from sac.errors import DecodeError, DecryptionError, RemoteProtocolError, ReplayError, SecurityError

__all__ = ["CosemModel", "ServerAssociation"]

# AARE diagnostics (acse-service-user)
DIAG_NO_REASON = 1
DIAG_CONTEXT_NOT_SUPPORTED = 2
DIAG_MECHANISM_NOT_RECOGNISED = 11
# the smallest client-max-receive-pdu-size that leaves room for a ciphered block
MIN_CLIENT_PDU = 64
# header of GET-Response-With-Datablock: tag, choice, iip, last, block u32, choice, BER len
BLOCK_HEADER = 1 + 1 + 1 + 1 + 4 + 1 + 3


class CosemModel(Protocol):
    """The objects a server association serves; the model enforces access rights."""

    def get(
        self, client_sap: int, attribute: AttributeDescriptor, access: SelectiveAccess | None
    ) -> Any:
        """The attribute's Data, or a DataAccessResult."""

    def set(self, client_sap: int, attribute: AttributeDescriptor, value: Any) -> DataAccessResult:
        """Write the attribute."""

    def action(
        self, client_sap: int, method: MethodDescriptor, parameters: Any
    ) -> tuple[ActionResult, Any]:
        """Run the method: its result and NO_VALUE, the returned Data or a DataAccessResult."""


class ServerAssociation(WrapperEndpoint):
    def __init__(
        self,
        model: CosemModel,
        client_sap: int,
        server_sap: int = 1,
        *,
        security: SecurityContext | None = None,
        pre_established: bool = False,
        conformance: int = DEFAULT_CONFORMANCE,
        max_receive_pdu: int = 0xFFFF,
        client_max_receive_pdu: int = 0xFFFF,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(server_sap, client_sap, max_receive_pdu)
        self.model = model
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.security = security
        self.pre_established = pre_established
        self.conformance = conformance
        self.max_receive_pdu = max_receive_pdu
        self.client_max_receive_pdu = client_max_receive_pdu
        self.limits = limits
        self.associated = pre_established
        self._long_get: tuple[int, list[bytes], int] | None = None  # iip, chunks, last sent
        # attribute, blocks, bytes so far, last block number
        self._long_set: tuple[AttributeDescriptor, list[bytes], int, int] | None = None

    # --- output -----------------------------------------------------------------------

    def _reply(self, apdu: bytes, *, protect: bool = True) -> None:
        if protect and self.security is not None:
            apdu = self.security.protect(apdu)
        self._send(apdu)

    def notify(
        self, body: Any, *, long_invoke_id: int = 0, date_time: CosemDateTime | None = None
    ) -> None:
        """Queue a DATA-NOTIFICATION (a push), protected when the association is ciphered."""
        self._reply(DataNotification(long_invoke_id, date_time, body).to_bytes())

    # --- input ------------------------------------------------------------------------

    def receive_apdu(self, data: bytes) -> list[Event]:
        apdu = decode_apdu(data, self.limits)
        if isinstance(apdu, AARQ):
            return self._on_aarq(apdu)
        if isinstance(apdu, RLRQ):
            return self._on_rlrq(apdu)
        if isinstance(apdu, CipheredApdu):
            if self.security is None:
                self._exception(StateError.SERVICE_UNKNOWN, ServiceError.OPERATION_NOT_POSSIBLE)
                return []
            try:
                apdu = decode_apdu(self.security.unprotect(apdu), self.limits)
            except ReplayError as exc:
                if exc.last >= 0xFFFFFFFF:  # no counter left to expect: the key must change
                    self._exception(
                        StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
                    )
                else:
                    self._exception(
                        StateError.SERVICE_NOT_ALLOWED,
                        ServiceError.INVOCATION_COUNTER_ERROR,
                        exc.last + 1,
                    )
                return []
            except (DecryptionError, SecurityError, DecodeError):
                self._exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)
                return []
        elif self.security is not None:
            self._exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
            return []
        if not self.associated:
            self._exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
            return []
        handler = _HANDLERS.get(type(apdu))
        if handler is None:
            self._exception(StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)
            return []
        return handler(self, apdu)

    def _exception(self, state: StateError, service: ServiceError, ic: int | None = None) -> None:
        # unprotected: the peer may not be able to open anything we would cipher
        self._reply(ExceptionResponse(state, service, ic).to_bytes(), protect=False)

    # --- ACSE -------------------------------------------------------------------------

    def _on_aarq(self, aarq: AARQ) -> list[Event]:
        events: list[Event] = [AssociationRequested(aarq)]
        if self.pre_established or self.associated:
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_NO_REASON)
            return events
        if aarq.application_context != ApplicationContext.LOGICAL_NAME:
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_CONTEXT_NOT_SUPPORTED)
            return events
        if aarq.mechanism not in (None, 0):
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_MECHANISM_NOT_RECOGNISED)
            return events
        request = aarq.user_information
        if not isinstance(request, InitiateRequest):
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_NO_REASON)
            return events
        if request.proposed_dlms_version < 6:
            cse = ConfirmedServiceError(1, 6, 1)  # initiateError / initiate / too low
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_NO_REASON, cse)
            return events
        if 0 < request.client_max_receive_pdu_size < MIN_CLIENT_PDU:
            cse = ConfirmedServiceError(1, 6, 3)  # initiateError / initiate / pdu-size-too-short
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_NO_REASON, cse)
            return events
        conformance = request.proposed_conformance & self.conformance
        if not conformance:
            cse = ConfirmedServiceError(1, 6, 2)  # incompatible conformance
            self._aare(AssociationResult.REJECTED_PERMANENT, DIAG_NO_REASON, cse)
            return events
        self.client_max_receive_pdu = request.client_max_receive_pdu_size or 0xFFFF
        self.associated = True
        self._aare(
            AssociationResult.ACCEPTED,
            0,
            InitiateResponse(conformance, self.max_receive_pdu, 6),
        )
        return events

    def _aare(self, result: AssociationResult, diagnostic: int, info: Any = None) -> None:
        if info is None and result == AssociationResult.ACCEPTED:
            raise AssertionError("an accepted AARE carries an InitiateResponse")
        aare = AARE(result, diagnostic, info)
        self._reply(aare.to_bytes(), protect=False)

    def _on_rlrq(self, rlrq: RLRQ) -> list[Event]:
        if self.pre_established:
            self._exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
            return []
        self.associated = False
        self._long_get = self._long_set = None
        self._reply(RLRE(0).to_bytes(), protect=False)
        return [ReleaseRequested(rlrq)]

    # --- GET --------------------------------------------------------------------------

    def _room(self) -> int:
        return self.client_max_receive_pdu - (CIPHER_OVERHEAD if self.security else 0)

    def _on_get(self, req: GetRequestNormal) -> list[Event]:
        result = self.model.get(self.client_sap, req.attribute, req.access)
        apdu = GetResponseNormal(req.invoke_id_and_priority, result).to_bytes()
        if len(apdu) <= self._room():
            self._reply(apdu)
        else:
            raw = encode_data(result)
            size = self._room() - BLOCK_HEADER
            if size <= 0:
                raise RemoteProtocolError("the client's PDU size leaves no room for a block")
            chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
            self._long_get = (req.invoke_id_and_priority, chunks, 1)
            self._send_block(req.invoke_id_and_priority, chunks, 1)
        return [GetRequested(req.attribute, req.access)]

    def _send_block(self, iip: int, chunks: list[bytes], n: int) -> None:
        last = n == len(chunks)
        self._reply(GetResponseWithDatablock(iip, last, n, chunks[n - 1]).to_bytes())
        if last:
            self._long_get = None

    def _on_get_next(self, req: GetRequestNext) -> list[Event]:
        iip = req.invoke_id_and_priority
        if self._long_get is None:
            self._reply(
                GetResponseWithDatablock(
                    iip, True, req.block_number, error=DataAccessResult.NO_LONG_GET_IN_PROGRESS
                ).to_bytes()
            )
            return []
        long_iip, chunks, sent = self._long_get
        if req.block_number != sent or (iip & 0x0F) != (long_iip & 0x0F):
            self._long_get = None
            self._reply(
                GetResponseWithDatablock(
                    iip, True, req.block_number, error=DataAccessResult.DATA_BLOCK_NUMBER_INVALID
                ).to_bytes()
            )
            return []
        self._long_get = (iip, chunks, sent + 1)
        self._send_block(iip, chunks, sent + 1)
        return []

    def _on_get_list(self, req: GetRequestWithList) -> list[Event]:
        results = tuple(self.model.get(self.client_sap, d, a) for d, a in req.items)
        apdu = GetResponseWithList(req.invoke_id_and_priority, results).to_bytes()
        if len(apdu) > self._room():
            self._exception(StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
            return []
        self._reply(apdu)
        return [GetRequested(d, a) for d, a in req.items]

    # --- SET and ACTION ---------------------------------------------------------------

    def _on_set(self, req: SetRequestNormal) -> list[Event]:
        result = self.model.set(self.client_sap, req.attribute, req.value)
        self._reply(SetResponseNormal(req.invoke_id_and_priority, result).to_bytes())
        return [SetRequested(req.attribute, req.value)]

    def _on_set_first_block(self, req: SetRequestWithFirstDatablock) -> list[Event]:
        if req.block_number != 1:
            self._reply(
                SetResponseLastDatablock(
                    req.invoke_id_and_priority,
                    DataAccessResult.DATA_BLOCK_NUMBER_INVALID,
                    req.block_number,
                ).to_bytes()
            )
            return []
        self._long_set = (req.attribute, [req.raw], len(req.raw), 1)
        return self._set_block_done(req.invoke_id_and_priority, req.last_block, 1)

    def _on_set_block(self, req: SetRequestWithDatablock) -> list[Event]:
        iip = req.invoke_id_and_priority
        if self._long_set is None or req.block_number != self._long_set[3] + 1:
            self._long_set = None
            self._reply(
                SetResponseLastDatablock(
                    iip, DataAccessResult.NO_LONG_SET_IN_PROGRESS, req.block_number
                ).to_bytes()
            )
            return []
        attribute, chunks, size, _ = self._long_set
        chunks.append(req.raw)
        size += len(req.raw)
        if (not req.raw and not req.last_block) or size > self.limits.max_length:
            self._long_set = None
            self._reply(
                SetResponseLastDatablock(
                    iip, DataAccessResult.LONG_SET_ABORTED, req.block_number
                ).to_bytes()
            )
            return []
        self._long_set = (attribute, chunks, size, req.block_number)
        return self._set_block_done(iip, req.last_block, req.block_number)

    def _set_block_done(self, iip: int, last: bool, n: int) -> list[Event]:
        if not last:
            self._reply(SetResponseDatablock(iip, n).to_bytes())
            return []
        assert self._long_set is not None
        attribute, chunks, _, _ = self._long_set
        self._long_set = None
        try:
            value = decode_data(b"".join(chunks), self.limits)
        except DecodeError:
            self._reply(
                SetResponseLastDatablock(iip, DataAccessResult.TYPE_UNMATCHED, n).to_bytes()
            )
            return []
        result = self.model.set(self.client_sap, attribute, value)
        self._reply(SetResponseLastDatablock(iip, result, n).to_bytes())
        return [SetRequested(attribute, value)]

    def _on_action(self, req: ActionRequestNormal) -> list[Event]:
        result, returned = self.model.action(self.client_sap, req.method, req.parameters)
        self._reply(ActionResponseNormal(req.invoke_id_and_priority, result, returned).to_bytes())
        return [ActionRequested(req.method, req.parameters)]


_HANDLERS: dict[type, Callable[[ServerAssociation, Any], list[Event]]] = {
    GetRequestNormal: ServerAssociation._on_get,
    GetRequestNext: ServerAssociation._on_get_next,
    GetRequestWithList: ServerAssociation._on_get_list,
    SetRequestNormal: ServerAssociation._on_set,
    SetRequestWithFirstDatablock: ServerAssociation._on_set_first_block,
    SetRequestWithDatablock: ServerAssociation._on_set_block,
    ActionRequestNormal: ServerAssociation._on_action,
}
