"""What the services see of a connection: the small interfaces the protocols below them
offer, and the errors a request over them may end with.

* :class:`ILink`: requests to a meter as awaitables, over the client associations of one
  connection (:class:`~sac.protocols.link.Link` is the one there is);
* :class:`IPushConnection`: one meter's push connection as its session sees it
  (:class:`~sac.protocols.push.PushProtocol`): the first push PDU, the link, and the two
  ways it ends -- the clean close that acknowledges the push, or a reset.

The services are written against these (``typing.Protocol``: satisfied structurally), so
``sac.protocols`` never imports ``sac.services``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from sac.dlms.association import ClientAssociation
from sac.dlms.cosem import result_words
from sac.dlms.events import AssociationAccepted, Released
from sac.dlms.wrapper import WrapperPdu
from sac.dlms.xdlms import DataNotification, SelectiveAccess
from sac.errors import ProtocolError, RemoteProtocolError
from sac.profiles import CosemRef

__all__ = [
    "AccessError",
    "ILink",
    "IMetrics",
    "IPushConnection",
    "LinkClosed",
    "PushHandler",
    "ResponseTimeout",
]


class ResponseTimeout(ProtocolError):
    """The meter did not answer a request in time."""


class LinkClosed(ProtocolError):
    """The connection ended while a request was waiting."""


class AccessError(RemoteProtocolError):
    """The meter answered a request with a data-access-result or action-result other than
    success (``result``); ``authenticated`` when it came over a ciphered association (the
    only answers such an association lets through besides exception-responses)."""

    def __init__(self, what: str, result: Any, *, authenticated: bool = False) -> None:
        name = getattr(result, "name", str(result)).lower().replace("_", "-")
        super().__init__(f"{what}: {name}", int(result), authenticated=authenticated)
        self.result = result
        self.words = result_words(int(result))  # what it means, for people


class ILink(Protocol):
    """Requests over one connection.  Each fails with :class:`ResponseTimeout` when the
    meter does not answer in time, :class:`LinkClosed` when the connection ends first,
    :class:`AccessError` when the meter refuses it."""

    # a DATA-NOTIFICATION that arrives on an association of this link
    on_notification: Callable[[ClientAssociation, DataNotification], None] | None

    def attach(self, association: ClientAssociation) -> ClientAssociation: ...

    def detach(self, association: ClientAssociation) -> None: ...

    async def associate(self, association: ClientAssociation) -> AssociationAccepted: ...

    async def release(self, association: ClientAssociation) -> Released | None: ...

    async def get(
        self, association: ClientAssociation, ref: CosemRef, access: SelectiveAccess | None = None
    ) -> Any: ...

    async def set(self, association: ClientAssociation, ref: CosemRef, value: Any) -> None: ...

    async def action(
        self, association: ClientAssociation, ref: CosemRef, method: int, parameters: Any
    ) -> Any: ...


class IPushConnection(Protocol):
    """A meter's push connection, as the session that handles it sees it."""

    link: ILink  # requests to the meter, once its push is in
    peer: str  # the meter's address
    ldn: str | None  # the meter, once known: named in the connection's log line
    read: tuple[str, ...]  # what the session read beyond the push: the connection's record
    skipped: tuple[str, ...]  # what it could not read, each with why
    started: float  # time.monotonic() at the connect

    @property
    def closing(self) -> bool:
        """The connection is ending (closed, reset, or lost): nothing more to do on it."""

    @property
    def gone(self) -> bool:
        """The meter hung up."""

    def first_push(self) -> Awaitable[WrapperPdu]:
        """The meter's push PDU; CancelledError when the connection ends before it."""

    def close(self, outcome: str) -> None:
        """The clean end (FIN): the meter's push is acknowledged."""

    def abort(self, outcome: str, message: str) -> None:
        """A reset: the push is not acknowledged; ``message`` says why, in the log line."""


class IMetrics(Protocol):
    """Where the listeners count (:class:`sac.services.metrics.Metrics` is one)."""

    def count(self, name: str, amount: int = 1, **labels: str) -> None: ...

    def gauge(self, name: str, read: Callable[[], float]) -> None: ...

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...


# what a push listener calls with each connection: the session, to its end
PushHandler = Callable[[IPushConnection], Coroutine[Any, Any, None]]
