"""The client side of a DLMS association, sans-IO.

:class:`ClientAssociation` runs either

* an explicit association (the Public client, SAP 16): AARQ -> AARE, requests, RLRQ -> RLRE;
* a pre-established one (the Management client, SAP 1): no AARQ/RLRQ, every APDU protected
  with general-glo-ciphering through a :class:`~sac.dlms.security.SecurityContext`.

It does no I/O.  Requests (:meth:`get`, :meth:`set`, :meth:`action`...) queue wrapper PDUs
that :meth:`data_to_send` hands out; :meth:`receive_data` (a byte stream) or
:meth:`receive_pdu` (one framed PDU) return the :mod:`~sac.dlms.events` that happened.  Long
GET answers are reassembled from their blocks (the GET-Request-Next are queued by the
machine); a SET too long for the peer's PDU size is sent in blocks.  Every state change is in
the one table ``_TRANSITIONS``.

Framing: ``receive_data`` runs a framer that accepts only this association's wPorts, for a
connection that carries one association (a poll).  A connection that carries several -- a
push session: the meter's notification 1 -> 1, then the Public (16) and the Management (1)
associations -- runs one :class:`~sac.dlms.wrapper.WrapperFramer` itself and hands each PDU
to the machine its wPorts name, with :meth:`receive_pdu`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from sac.dlms.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    ApplicationContext,
    Conformance,
    InitiateRequest,
    InitiateResponse,
)
from sac.dlms.apdu import decode_apdu
from sac.dlms.axdr import DEFAULT_LIMITS, Limits, decode_data, encode_data
from sac.dlms.cosem import DataAccessResult
from sac.dlms.events import (
    ActionCompleted,
    AssociationAccepted,
    AssociationRejected,
    Event,
    GetCompleted,
    GetListCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
)
from sac.dlms.obis import Obis
from sac.dlms.security import CipheredApdu, SecurityContext
from sac.dlms.wrapper import WrapperFramer, WrapperPdu, encode_wrapper
from sac.dlms.xdlms import (
    NO_VALUE,
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
from sac.errors import DecodeError, LocalProtocolError, RemoteProtocolError, SacError

__all__ = ["ClientAssociation", "State"]

DEFAULT_CONFORMANCE = (
    Conformance.GET
    | Conformance.SET
    | Conformance.ACTION
    | Conformance.SELECTIVE_ACCESS
    | Conformance.BLOCK_TRANSFER_WITH_GET
    | Conformance.BLOCK_TRANSFER_WITH_SET
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.DATA_NOTIFICATION
)
# AARE diagnostic: accepted, but an HLS exchange must follow
DIAG_AUTHENTICATION_REQUIRED = 14
# bytes a ciphered general-glo envelope adds: tag, title, BER length, SC, IC, tag
CIPHER_OVERHEAD = 1 + 1 + 8 + 3 + 1 + 4 + 12


class State(Enum):
    IDLE = auto()
    AWAITING_AARE = auto()
    ASSOCIATED = auto()
    AWAITING_RLRE = auto()
    RELEASED = auto()
    ABORTED = auto()


class _In(Enum):
    SEND_AARQ = auto()
    RECV_AARE_ACCEPTED = auto()
    RECV_AARE_REJECTED = auto()
    SEND_REQUEST = auto()
    RECV_RESPONSE = auto()
    SEND_RLRQ = auto()
    RECV_RLRE = auto()
    RELEASE_LOCALLY = auto()
    ABORT = auto()


S, E = State, _In
_TRANSITIONS: dict[tuple[State, _In], State] = {
    (S.IDLE, E.SEND_AARQ): S.AWAITING_AARE,
    (S.RELEASED, E.SEND_AARQ): S.AWAITING_AARE,
    (S.AWAITING_AARE, E.RECV_AARE_ACCEPTED): S.ASSOCIATED,
    (S.AWAITING_AARE, E.RECV_AARE_REJECTED): S.IDLE,
    (S.ASSOCIATED, E.SEND_REQUEST): S.ASSOCIATED,
    (S.ASSOCIATED, E.RECV_RESPONSE): S.ASSOCIATED,
    (S.AWAITING_RLRE, E.RECV_RESPONSE): S.AWAITING_RLRE,
    (S.ASSOCIATED, E.SEND_RLRQ): S.AWAITING_RLRE,
    (S.AWAITING_RLRE, E.RECV_RLRE): S.RELEASED,
    (S.ASSOCIATED, E.RELEASE_LOCALLY): S.RELEASED,
}
for _state in State:
    _TRANSITIONS[(_state, E.ABORT)] = S.ABORTED
del S, E, _state


class WrapperEndpoint:
    """What both association machines share: the PDUs they queue and the ones they accept.

    ``local_sap``/``remote_sap`` are this side's and the peer's wPorts; ``max_apdu`` bounds
    what the framer of :meth:`receive_data` accepts.
    """

    def __init__(self, local_sap: int, remote_sap: int, max_apdu: int) -> None:
        self.local_sap = local_sap
        self.remote_sap = remote_sap
        self._outbox: list[bytes] = []
        self._framer = WrapperFramer(max_apdu, sources={remote_sap}, destinations={local_sap})

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, as wrapper PDUs; empties the queue."""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def _send(self, apdu: bytes) -> None:
        self._outbox.append(encode_wrapper(self.local_sap, self.remote_sap, apdu))

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the stream: the events of every whole PDU in them.

        A PDU that cannot be accepted raises a :class:`SacError`; the events of the PDUs
        before it in ``data`` are on the exception's ``events`` (a command may have completed).
        """
        events: list[Event] = []
        try:
            for pdu in self._framer.feed(data):
                events.extend(self.receive_pdu(pdu))
        except SacError as exc:
            exc.events = tuple(events)
            raise
        return events

    def receive_pdu(self, pdu: WrapperPdu) -> list[Event]:
        if pdu.source != self.remote_sap or pdu.destination != self.local_sap:
            raise RemoteProtocolError(
                f"a PDU from wPort {pdu.source} to {pdu.destination} is not for this association"
            )
        return self.receive_apdu(pdu.apdu)

    def receive_apdu(self, data: bytes) -> list[Event]:
        raise NotImplementedError("each association machine reads its own APDUs")


@dataclass(slots=True)
class _Pending:
    kind: str  # "get", "get-list", "set", "action"
    target: Any  # descriptor(s)
    blocks: list[bytes] = field(default_factory=list)
    received: int = 0  # bytes of the blocks so far
    next_block: int = 1
    # a SET sent in blocks: all its chunks (next_block counts the ones acknowledged)
    set_chunks: list[bytes] = field(default_factory=list)


class ClientAssociation(WrapperEndpoint):
    """One client association with one logical device (see the module docstring)."""

    def __init__(
        self,
        client_sap: int,
        server_sap: int = 1,
        *,
        security: SecurityContext | None = None,
        pre_established: bool = False,
        conformance: int = DEFAULT_CONFORMANCE,
        max_receive_pdu: int = 0xFFFF,
        server_max_receive_pdu: int = 0xFFFF,
        invoke_priority: int = 0xC0,
        first_invoke_id: int = 1,
        general_ciphering: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        # what we announce bounds every APDU we receive, ciphering included
        super().__init__(client_sap, server_sap, max_receive_pdu)
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.security = security
        self.pre_established = pre_established
        self.conformance = conformance
        self.max_receive_pdu = max_receive_pdu
        self.server_max_receive_pdu = server_max_receive_pdu
        self.general_ciphering = general_ciphering
        self.limits = limits
        self.negotiated: InitiateResponse | None = None
        self._priority = invoke_priority & 0xF0
        self._next_id = first_invoke_id & 0x0F
        self._pending: dict[int, _Pending] = {}
        self._authenticated = False  # the APDU being read came ciphered, its tag checked
        self.state = State.ASSOCIATED if pre_established else State.IDLE

    # --- state ------------------------------------------------------------------------

    def _move(self, event: _In, *, remote: bool = False) -> None:
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            cls = RemoteProtocolError if remote else LocalProtocolError
            raise cls(f"{event.name.lower()} is not allowed in state {self.state.name}")
        self.state = new

    @property
    def pending(self) -> tuple[int, ...]:
        """Invoke ids of the requests still waiting for an answer."""
        return tuple(self._pending)

    # --- outgoing ---------------------------------------------------------------------

    def _queue(self, apdu: bytes, *, protect: bool = True) -> None:
        if protect and self.security is not None:
            apdu = self.security.protect(apdu, general=self.general_ciphering)
        if len(apdu) > self.server_max_receive_pdu:
            raise LocalProtocolError(
                f"an APDU of {len(apdu)} bytes is over the peer's limit of "
                f"{self.server_max_receive_pdu}"
            )
        self._send(apdu)

    def associate(self, *, calling_ap_title: bytes | None = None) -> None:
        """Queue an AARQ (explicit associations only; no ciphering, no authentication)."""
        if self.pre_established:
            raise LocalProtocolError("a pre-established association sends no AARQ")
        if self.security is not None:
            raise LocalProtocolError("ciphered explicit associations are not supported")
        self._move(_In.SEND_AARQ)
        aarq = AARQ(
            InitiateRequest(self.conformance, self.max_receive_pdu),
            ApplicationContext.LOGICAL_NAME,
            calling_ap_title,
        )
        self._queue(aarq.to_bytes(), protect=False)

    def release(self) -> None:
        """Queue an RLRQ; a pre-established association just ends locally (no RLRQ)."""
        if self._pending:
            raise LocalProtocolError(f"{len(self._pending)} requests are still pending")
        if self.pre_established:
            self._move(_In.RELEASE_LOCALLY)
            return
        self._move(_In.SEND_RLRQ)
        self._queue(RLRQ(0).to_bytes(), protect=False)

    def _new_invoke_id(self) -> int:
        for _ in range(16):
            iid = self._next_id
            self._next_id = (iid + 1) & 0x0F
            if iid not in self._pending:
                return iid
        raise LocalProtocolError("16 requests are already pending")

    def _request(
        self, kind: str, target: Any, build: Callable[[int], bytes]
    ) -> tuple[int, _Pending]:
        """Encode and queue a request; it is pending only once that has succeeded."""
        self._move(_In.SEND_REQUEST)
        iid = self._new_invoke_id()
        self._queue(build(self._priority | iid))
        pending = self._pending[iid] = _Pending(kind, target)
        return iid, pending

    def get(
        self,
        class_id: int,
        instance: Any,
        attribute: int = 2,
        access: SelectiveAccess | None = None,
    ) -> int:
        """Queue a GET; returns its invoke id."""
        desc = AttributeDescriptor(class_id, Obis(instance), attribute)
        return self._request(
            "get", desc, lambda iip: GetRequestNormal(iip, desc, access).to_bytes()
        )[0]

    def get_list(self, items: list[tuple[AttributeDescriptor, SelectiveAccess | None]]) -> int:
        targets = tuple(d for d, _ in items)
        return self._request(
            "get-list", targets, lambda iip: GetRequestWithList(iip, tuple(items)).to_bytes()
        )[0]

    def set(
        self,
        class_id: int,
        instance: Any,
        attribute: int,
        value: Any,
        access: SelectiveAccess | None = None,
    ) -> int:
        """Queue a SET; values too long for the peer go in blocks."""
        desc = AttributeDescriptor(class_id, Obis(instance), attribute)
        room = self.server_max_receive_pdu - (CIPHER_OVERHEAD if self.security else 0)
        if len(SetRequestNormal(0, desc, value, access).to_bytes()) <= room:
            return self._request(
                "set", desc, lambda iip: SetRequestNormal(iip, desc, value, access).to_bytes()
            )[0]
        raw = encode_data(value)
        # the first block's own header (descriptor, access, block number, a 3-byte length)
        header = len(SetRequestWithFirstDatablock(0, desc, False, 1, b"", access).to_bytes())
        size = room - header - 3
        if size <= 0:
            raise LocalProtocolError("the peer's PDU size leaves no room for a SET block")
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        iid, pending = self._request(
            "set",
            desc,
            lambda iip: SetRequestWithFirstDatablock(
                iip, desc, len(chunks) == 1, 1, chunks[0], access
            ).to_bytes(),
        )
        pending.set_chunks = chunks
        return iid

    def action(self, class_id: int, instance: Any, method: int, parameters: Any = NO_VALUE) -> int:
        desc = MethodDescriptor(class_id, Obis(instance), method)
        return self._request(
            "action", desc, lambda iip: ActionRequestNormal(iip, desc, parameters).to_bytes()
        )[0]

    def abort(self, reason: str = "connection lost") -> list[Event]:
        """End the association at once; every pending request fails."""
        self._move(_In.ABORT)
        failed: list[Event] = [
            RequestFailed(iid, RemoteProtocolError(f"request aborted: {reason}"))
            for iid in self._pending
        ]
        self._pending.clear()
        self._outbox.clear()
        return failed

    # --- incoming ---------------------------------------------------------------------

    def receive_apdu(self, data: bytes) -> list[Event]:
        if self.state is State.AWAITING_RLRE and not self._pending:
            return self._on_release_answer(data)
        apdu = decode_apdu(data, self.limits)
        self._authenticated = False
        if isinstance(apdu, CipheredApdu):
            if self.security is None:
                raise RemoteProtocolError("a ciphered APDU on an unciphered association")
            apdu = decode_apdu(self.security.unprotect(apdu), self.limits)
            self._authenticated = True  # unprotect checked its tag
        elif self.security is not None and not isinstance(
            apdu, ExceptionResponse | ConfirmedServiceError | AARE | RLRE
        ):
            raise RemoteProtocolError(
                f"an unciphered {type(apdu).__name__} on a ciphered association"
            )
        handler = _HANDLERS.get(type(apdu))
        if handler is None:
            raise RemoteProtocolError(f"a client does not expect {type(apdu).__name__}")
        return handler(self, apdu)

    def _on_aare(self, aare: AARE) -> list[Event]:
        if not aare.accepted:
            self._move(_In.RECV_AARE_REJECTED, remote=True)
            return [AssociationRejected(aare)]
        info = aare.user_information
        if not isinstance(info, InitiateResponse):
            raise RemoteProtocolError("an accepted AARE without an InitiateResponse")
        if aare.application_context != ApplicationContext.LOGICAL_NAME:
            raise RemoteProtocolError(f"the AARE answers context {aare.application_context}")
        if aare.diagnostic == DIAG_AUTHENTICATION_REQUIRED:
            raise RemoteProtocolError("the meter requires an authentication this client lacks")
        self._move(_In.RECV_AARE_ACCEPTED, remote=True)
        self.negotiated = info
        self.server_max_receive_pdu = info.server_max_receive_pdu_size or 0xFFFF
        return [AssociationAccepted(aare)]

    def _on_release_answer(self, data: bytes) -> list[Event]:
        """The answer to our RLRQ: whatever it holds, the association is over.  Meters answer
        with malformed RLREs (lengths that lie, unknown fields) or with something else; the
        release's content is not used, so that is a quirk to log, not a broken session."""
        try:
            apdu = decode_apdu(data, self.limits)
        except SacError as exc:
            quirk = f"a malformed release answer ({exc})"
        else:
            if isinstance(apdu, RLRE):
                return self._on_rlre(apdu)
            quirk = f"a {type(apdu).__name__} answered the release"
        self._move(_In.RECV_RLRE, remote=True)
        return [Released(None, quirk=f"{quirk}: {data[:16].hex()}")]

    def _on_rlre(self, rlre: RLRE) -> list[Event]:
        self._move(_In.RECV_RLRE, remote=True)
        return [Released(rlre)]

    def _take(self, iip: int, kind: str) -> tuple[int, _Pending]:
        iid = iip & 0x0F
        pending = self._pending.get(iid)
        if pending is None or pending.kind != kind:
            raise RemoteProtocolError(f"a {kind} response to no pending request (id {iid})")
        self._move(_In.RECV_RESPONSE, remote=True)
        return iid, pending

    def _on_get_normal(self, resp: GetResponseNormal) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "get")
        del self._pending[iid]
        return [GetCompleted(iid, pending.target, resp.result)]

    def _on_get_block(self, resp: GetResponseWithDatablock) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "get")
        if resp.block_number != pending.next_block:
            del self._pending[iid]
            return [
                RequestFailed(
                    iid,
                    RemoteProtocolError(
                        f"block {resp.block_number} received, {pending.next_block} expected"
                    ),
                )
            ]
        if resp.error is not None:
            del self._pending[iid]
            return [GetCompleted(iid, pending.target, resp.error)]
        pending.blocks.append(resp.raw)
        pending.received += len(resp.raw)
        if not resp.last_block:
            pending.next_block += 1
            if not resp.raw or pending.received > self.limits.max_length:
                # abandoned by not asking for the next block
                del self._pending[iid]
                reason = "an empty block" if not resp.raw else "block transfer over the limit"
                return [RequestFailed(iid, RemoteProtocolError(reason))]
            self._queue(GetRequestNext(resp.invoke_id_and_priority, resp.block_number).to_bytes())
            return []
        del self._pending[iid]
        try:
            value = decode_data(b"".join(pending.blocks), self.limits)
        except DecodeError as exc:
            return [RequestFailed(iid, RemoteProtocolError(f"reassembled data: {exc}"))]
        return [GetCompleted(iid, pending.target, value)]

    def _on_get_list(self, resp: GetResponseWithList) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "get-list")
        del self._pending[iid]
        if len(resp.results) != len(pending.target):
            return [RequestFailed(iid, RemoteProtocolError("get-with-list result count differs"))]
        return [GetListCompleted(iid, pending.target, resp.results)]

    def _on_set_normal(self, resp: SetResponseNormal) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "set")
        del self._pending[iid]
        return [SetCompleted(iid, pending.target, resp.result)]

    def _on_set_block(self, resp: SetResponseDatablock) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "set")
        if resp.block_number != pending.next_block or pending.next_block >= len(pending.set_chunks):
            del self._pending[iid]
            return [RequestFailed(iid, RemoteProtocolError("unexpected SET block acknowledge"))]
        pending.next_block += 1
        n = pending.next_block
        last = n == len(pending.set_chunks)
        self._queue(
            SetRequestWithDatablock(
                resp.invoke_id_and_priority, last, n, pending.set_chunks[n - 1]
            ).to_bytes()
        )
        return []

    def _on_set_last_block(self, resp: SetResponseLastDatablock) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "set")
        del self._pending[iid]
        if resp.result == DataAccessResult.SUCCESS and resp.block_number != len(pending.set_chunks):
            return [
                RequestFailed(
                    iid,
                    RemoteProtocolError(
                        f"SET acknowledged at block {resp.block_number}"
                        f" of {len(pending.set_chunks)}"
                    ),
                )
            ]
        return [SetCompleted(iid, pending.target, resp.result)]

    def _on_action(self, resp: ActionResponseNormal) -> list[Event]:
        iid, pending = self._take(resp.invoke_id_and_priority, "action")
        del self._pending[iid]
        return [ActionCompleted(iid, pending.target, resp.result, resp.return_parameters)]

    def _on_notification(self, dn: DataNotification) -> list[Event]:
        return [NotificationReceived(dn)]

    def _fail_oldest(self, error: RemoteProtocolError) -> list[Event]:
        if not self._pending:
            raise error
        iid = next(iter(self._pending))
        del self._pending[iid]
        return [RequestFailed(iid, error)]

    def _on_exception(self, exc: ExceptionResponse) -> list[Event]:
        detail = f"exception-response {_name(exc.state_error)}/{_name(exc.service_error)}"
        if exc.invocation_counter is not None:
            detail += f" (the meter expects invocation counter {exc.invocation_counter})"
        if not self._authenticated and self.security is not None:
            detail += ", unciphered"
        return self._fail_oldest(
            RemoteProtocolError(
                detail,
                int(exc.service_error),
                exc.invocation_counter,
                authenticated=self._authenticated,
            )
        )

    def _on_cse(self, cse: ConfirmedServiceError) -> list[Event]:
        if self.state is State.AWAITING_AARE:
            self._move(_In.RECV_AARE_REJECTED, remote=True)
            return [AssociationRejected(AARE(1, 0, cse, diagnostic_source=1))]
        return self._fail_oldest(
            RemoteProtocolError(
                f"confirmed-service-error {cse.service}/{cse.error_type}/{cse.value}",
                cse.value,
                authenticated=self._authenticated,
            )
        )


def _name(value: Any) -> str:
    return value.name.lower().replace("_", "-") if hasattr(value, "name") else str(value)


_HANDLERS: dict[type, Callable[[ClientAssociation, Any], list[Event]]] = {
    AARE: ClientAssociation._on_aare,
    RLRE: ClientAssociation._on_rlre,
    GetResponseNormal: ClientAssociation._on_get_normal,
    GetResponseWithDatablock: ClientAssociation._on_get_block,
    GetResponseWithList: ClientAssociation._on_get_list,
    SetResponseNormal: ClientAssociation._on_set_normal,
    SetResponseDatablock: ClientAssociation._on_set_block,
    SetResponseLastDatablock: ClientAssociation._on_set_last_block,
    ActionResponseNormal: ClientAssociation._on_action,
    DataNotification: ClientAssociation._on_notification,
    ExceptionResponse: ClientAssociation._on_exception,
    ConfirmedServiceError: ClientAssociation._on_cse,
}
