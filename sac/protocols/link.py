"""Requests over one connection as Deferreds: the thin layer between a transport and the
sans-IO association machines.

A :class:`Link` carries the client associations of one connection (a push session has the
Public and the Management client on the meter's socket; a poll has the same on the SAC's).
The protocol that owns the transport frames the byte stream and hands each PDU to
:meth:`Link.receive_pdu`, which routes it by its destination wPort (the client SAP) to the
association, turns the machine's events into fired Deferreds, and writes what the machine
queued (a GET-Request-Next, the next SET block).  Every request has a response timeout: when
it passes the request fails and ``on_timeout`` is called (the stream can no longer be
trusted, so the owner drops the connection).  :meth:`Link.lost` fails whatever is waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime

from sac.dlms.association import ClientAssociation
from sac.dlms.cosem import ActionResult, DataAccessResult
from sac.dlms.events import (
    ActionCompleted,
    AssociationAccepted,
    AssociationRejected,
    Event,
    GetCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
)
from sac.dlms.wrapper import WrapperPdu
from sac.dlms.xdlms import NO_VALUE, DataNotification, SelectiveAccess
from sac.errors import RemoteProtocolError, SacError
from sac.profiles import CosemRef
from sac.protocols.interface import AccessError, LinkClosed, ResponseTimeout

__all__ = ["AccessError", "Link", "LinkClosed", "ResponseTimeout"]


def describe(ref: CosemRef) -> str:
    return f"{ref.class_id}/{ref.obis}/{ref.attribute}"


class Link:
    """The :class:`~sac.protocols.interface.ILink` of one connection."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        clock: IReactorTime,
        *,
        timeout: float,
        on_timeout: Callable[[], None],
        on_notification: Callable[[ClientAssociation, DataNotification], None] | None = None,
    ) -> None:
        self._write = write
        self._clock = clock
        self.timeout = timeout
        self._on_timeout = on_timeout
        self.on_notification = on_notification
        self._associations: dict[int, ClientAssociation] = {}
        self._waiting: dict[tuple[int, int], Deferred[Event]] = {}
        self._association_waiting: dict[int, Deferred[Event]] = {}
        self.closed: str | None = None
        self.requests = 0

    # --- associations

    def attach(self, association: ClientAssociation) -> ClientAssociation:
        if association.client_sap in self._associations:
            raise ValueError(f"client {association.client_sap} is already on this link")
        self._associations[association.client_sap] = association
        return association

    def detach(self, association: ClientAssociation) -> None:
        self._associations.pop(association.client_sap, None)

    def accepts(self, pdu: WrapperPdu) -> bool:
        association = self._associations.get(pdu.destination)
        return association is not None and association.server_sap == pdu.source

    # --- incoming

    def receive_pdu(self, pdu: WrapperPdu) -> None:
        """Route one PDU; a SacError means the connection must close (after the events the
        machine produced before it have been delivered)."""
        association = self._associations.get(pdu.destination)
        if association is None or association.server_sap != pdu.source:
            raise RemoteProtocolError(
                f"a PDU from wPort {pdu.source} to {pdu.destination}: no association there"
            )
        try:
            events = association.receive_pdu(pdu)
        except SacError as exc:
            self._deliver(association, list(exc.events))  # type: ignore[arg-type]
            raise
        self._deliver(association, events)
        self._flush(association)

    def _deliver(self, association: ClientAssociation, events: list[Event]) -> None:
        sap = association.client_sap
        for event in events:
            if isinstance(event, AssociationAccepted | AssociationRejected | Released):
                waiting = self._association_waiting.pop(sap, None)
            elif isinstance(event, NotificationReceived):
                if self.on_notification is not None:
                    self.on_notification(association, event.notification)
                continue
            else:
                waiting = self._waiting.pop((sap, event.invoke_id), None)  # type: ignore[attr-defined]
            if waiting is not None:
                waiting.callback(event)

    def _flush(self, association: ClientAssociation) -> None:
        data = association.data_to_send()
        if data and self.closed is None:
            self._write(data)

    def lost(self, why: str) -> None:
        """The connection is gone: every waiting request fails."""
        if self.closed is not None:
            return
        self.closed = why
        waiting = [*self._waiting.values(), *self._association_waiting.values()]
        self._waiting.clear()
        self._association_waiting.clear()
        for d in waiting:
            d.errback(LinkClosed(f"connection closed: {why}"))

    # --- outgoing

    def _wait(self, key: Any, table: dict[Any, Deferred[Event]], what: str) -> Deferred[Event]:
        if self.closed is not None:
            raise LinkClosed(f"connection closed: {self.closed}")
        d: Deferred[Event] = Deferred()
        table[key] = d

        def timed_out(failure: Any) -> Any:
            if not failure.check(TimeoutError):
                return failure
            if table.get(key) is d:
                del table[key]
            self._on_timeout()
            raise ResponseTimeout(f"no answer to {what} within {self.timeout:g} s")

        d.addTimeout(self.timeout, self._clock)
        d.addErrback(timed_out)
        return d

    async def _request(self, association: ClientAssociation, start: Callable[[], int], what: str):
        invoke_id = start()
        self.requests += 1
        waiting = self._wait((association.client_sap, invoke_id), self._waiting, what)
        self._flush(association)
        event = await waiting
        if isinstance(event, RequestFailed):
            raise event.error
        return event

    async def associate(self, association: ClientAssociation) -> AssociationAccepted:
        association.associate()
        waiting = self._wait(association.client_sap, self._association_waiting, "the AARQ")
        self._flush(association)
        event = await waiting
        if isinstance(event, AssociationRejected):
            raise RemoteProtocolError(
                f"association refused (diagnostic {event.diagnostic})", event.diagnostic
            )
        return event  # type: ignore[return-value]

    async def release(self, association: ClientAssociation) -> Released | None:
        """End the association: the meter's answer (None for a pre-established one)."""
        association.release()
        if association.pre_established:
            return None
        waiting = self._wait(association.client_sap, self._association_waiting, "the RLRQ")
        self._flush(association)
        event = await waiting
        assert isinstance(event, Released)
        return event

    async def get(
        self,
        association: ClientAssociation,
        ref: CosemRef,
        access: SelectiveAccess | None = None,
    ) -> Any:
        """The value of one attribute; AccessError when the meter refuses."""
        event = await self._request(
            association,
            lambda: association.get(ref.class_id, ref.obis, ref.attribute, access),
            f"GET {describe(ref)}",
        )
        assert isinstance(event, GetCompleted)
        if isinstance(event.result, DataAccessResult):
            raise AccessError(
                f"GET {describe(ref)}", event.result, authenticated=association.security is not None
            )
        return event.result

    async def set(self, association: ClientAssociation, ref: CosemRef, value: Any) -> None:
        event = await self._request(
            association,
            lambda: association.set(ref.class_id, ref.obis, ref.attribute, value),
            f"SET {describe(ref)}",
        )
        assert isinstance(event, SetCompleted)
        if event.result != DataAccessResult.SUCCESS:
            raise AccessError(
                f"SET {describe(ref)}", event.result, authenticated=association.security is not None
            )

    async def action(
        self, association: ClientAssociation, ref: CosemRef, method: int, parameters: Any
    ) -> Any:
        what = f"ACTION {ref.class_id}/{ref.obis} method {method}"
        event = await self._request(
            association,
            lambda: association.action(ref.class_id, ref.obis, method, parameters),
            what,
        )
        assert isinstance(event, ActionCompleted)
        if event.result != ActionResult.SUCCESS:
            raise AccessError(what, event.result, authenticated=association.security is not None)
        return None if event.return_parameters is NO_VALUE else event.return_parameters
