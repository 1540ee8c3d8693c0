"""The push session: what happens on a meter's connection once it has pushed
(docs/uni-ts-11291.md §5; docs/architecture.md, "A meter calls in").

:class:`~sac.protocols.push.PushProtocol` frames the bytes, keeps the limits and the
linger, and calls a :class:`PushSession` with each connection.  The session:

1. hands the first push to :class:`~sac.services.acquisition.Acquisition`, which stores it
   (or spools it) before anything else happens;
2. if commands wait for that meter, or items of its read plan are due (sac.services.plan:
   the battery, the logbooks since their last entry...): claims the commands, identifies
   the Management counter (from the frame, else a Public association), runs the commands
   then the plan's items through the Management association within the session budget,
   stores what they read, and closes the connection cleanly;
3. otherwise closes at once -- the clean close is the meter's acknowledgement.

A session that only reads its plan acknowledges the push however it ends: the push is
stored, and what the plan could not read stays due for the next session.

Every step is in the one table ``_TRANSITIONS``.  :class:`PushFactory` is the listener
bound to these sessions; :class:`PushDatagramProtocol` takes pushes over UDP (no session
follows: a datagram gets no answer).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from enum import Enum, auto
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from sac.dlms.wrapper import WrapperPdu
from sac.errors import SacError
from sac.profiles.readplan import PlanItem
from sac.protocols.interface import IPushConnection, ResponseTimeout
from sac.protocols.push import DEFAULT_LISTENER, ListenerSettings, PushListener, WrapperDatagrams
from sac.services.acquisition import Accepted, Acquisition, PushRejected, StoreUnavailable
from sac.services.connections import ConnectionLog
from sac.services.ingest import IngestStore
from sac.services.metrics import Metrics
from sac.services.plan import due_now, read_counters, run_plan
from sac.services.session import MeterSession, SessionSettings, SessionStore, merge, requeue
from sac.store import Connection
from sac.store.model import Command, Ingest

__all__ = ["PushDatagramProtocol", "PushFactory", "PushSession", "PushSessionStore", "State"]

DEFAULT_SESSION = SessionSettings()


class PushSessionStore(SessionStore, IngestStore, Protocol):
    """The parts of the store a push session reaches after its push: the meter's commands,
    keys and counters (its session), and the readings the commands read."""


class State(Enum):
    AWAITING_PUSH = auto()  # the connection is open, the push not yet in
    STORING = auto()  # the push is with the acquisition
    CLAIMING = auto()  # commands wait for the meter: claiming them
    IDENTIFYING = auto()  # the Management counter: from the frame, else a Public association
    OPENING = auto()  # the Management association
    RUNNING = auto()  # the claimed commands, then the read plan's items due
    ACKNOWLEDGED = auto()  # closed cleanly (FIN): the push is the meter's no more
    RESET = auto()  # aborted (RST): not acknowledged
    LEFT = auto()  # the connection ended under the session: nothing more to do


class _In(Enum):
    PUSHED = auto()
    ENDED = auto()  # the connection ended (or is ending) under the session
    REFUSED = auto()  # the acquisition refused the push, or the store is down
    SPOOLED = auto()
    STORED = auto()  # and no commands (or none claimed, or no meter left to run them)
    SESSION_DUE = auto()  # commands wait for the meter, or its read plan has items due
    CLAIMED = auto()  # (none, when only the plan is due)
    IDENTIFIED = auto()
    OTHER_LDN = auto()
    OPENED = auto()
    RAN = auto()  # the commands (and the plan) ran
    READ = auto()  # the plan alone ran, whatever became of it: the push stays acknowledged
    FAILED = auto()


S, E = State, _In
_TRANSITIONS: dict[tuple[State, _In], State] = {
    (S.AWAITING_PUSH, E.PUSHED): S.STORING,
    (S.AWAITING_PUSH, E.ENDED): S.LEFT,
    (S.STORING, E.REFUSED): S.RESET,
    (S.STORING, E.ENDED): S.LEFT,
    (S.STORING, E.SPOOLED): S.ACKNOWLEDGED,
    (S.STORING, E.STORED): S.ACKNOWLEDGED,
    (S.STORING, E.SESSION_DUE): S.CLAIMING,
    (S.CLAIMING, E.STORED): S.ACKNOWLEDGED,
    (S.CLAIMING, E.CLAIMED): S.IDENTIFYING,
    (S.IDENTIFYING, E.IDENTIFIED): S.OPENING,
    (S.IDENTIFYING, E.OTHER_LDN): S.RESET,
    (S.OPENING, E.OPENED): S.RUNNING,
    (S.RUNNING, E.RAN): S.ACKNOWLEDGED,
    (S.RUNNING, E.READ): S.ACKNOWLEDGED,
}
for _state in (S.IDENTIFYING, S.OPENING, S.RUNNING):
    _TRANSITIONS[(_state, E.FAILED)] = S.RESET
    _TRANSITIONS[(_state, E.READ)] = S.ACKNOWLEDGED
del S, E, _state


class PushSession:
    """One meter's push connection, from its push to its end."""

    __slots__ = ("conn", "f", "state")
    log = Logger()

    def __init__(self, factory: PushFactory, connection: IPushConnection) -> None:
        self.f = factory
        self.conn = connection
        self.state = State.AWAITING_PUSH

    def _go(self, event: _In) -> State:
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            # a bug, not the meter's doing: the protocol logs it and resets the connection
            raise RuntimeError(f"push session: {event.name} in state {self.state.name}")
        self.state = new
        return new

    def _end(self, event: _In, outcome: str, message: str = "") -> None:
        """The last step: the clean close (the push acknowledged), or a reset."""
        if self._go(event) is State.ACKNOWLEDGED:
            self.conn.close(outcome)
        else:
            self.conn.abort(outcome, message)

    async def run(self) -> None:
        try:
            first = await self.conn.first_push()
        except CancelledError:
            self._go(_In.ENDED)  # the connection ended before any push
            return
        self._go(_In.PUSHED)
        accepted = await self._push(first)
        if accepted is None:
            return
        due = self._due(accepted)
        if not (accepted.commands_waiting or due) or self.conn.gone:
            self._end(_In.STORED, "stored")
            return
        self._go(_In.SESSION_DUE)
        claimed = await self._claim(accepted) if accepted.commands_waiting else []
        if claimed or due:
            self._go(_In.CLAIMED)
            await self._session(accepted, claimed, due)
        else:
            self._end(_In.STORED, "stored")

    async def _push(self, first: WrapperPdu) -> Accepted | None:
        """Store the push; the Accepted when commands may wait for its meter, else the end."""
        conn, f = self.conn, self.f
        try:
            accepted = await f.acquisition.push(first.apdu, conn.peer, f.now())
        except PushRejected as exc:
            conn.ldn = exc.ldn
            self._end(_In.REFUSED, exc.reason, str(exc))
            return None
        except StoreUnavailable as exc:
            self._end(_In.REFUSED, "store-unavailable", str(exc))
            return None
        if conn.closing:
            self._go(_In.ENDED)
            return None
        if time.monotonic() - conn.started > f.settings.reply_within:
            f.metrics.count("sac_push_late_total")
        if accepted.spooled or accepted.meter is None:
            self._end(_In.SPOOLED, "spooled")
            return None
        conn.ldn = accepted.meter.ldn
        return accepted

    def _due(self, accepted: Accepted) -> list[PlanItem]:
        """The items of the meter's read plan due now (none when the plan is off)."""
        if not self.f.session.read_plan or accepted.profile is None:
            return []
        return due_now(accepted.profile, accepted.marks, self.f.now(), accepted.carried)

    async def _claim(self, accepted: Accepted) -> list[Command]:
        assert accepted.meter is not None
        try:
            return await self.f.store.commands.claim(accepted.meter.ldn, by=self.f.session.name)
        except SacError as exc:
            self.log.warn("meter {ldn}: commands not claimed: {e}", ldn=self.conn.ldn, e=exc)
            return []

    async def _session(
        self, accepted: Accepted, claimed: list[Command], due: list[PlanItem]
    ) -> None:
        assert accepted.meter is not None and accepted.profile is not None
        conn, f = self.conn, self.f
        budget = min(float(accepted.profile.session_budget), f.settings.session_timeout)
        deadline = f.reactor.seconds() + budget - 2 * f.settings.reply_within
        session = MeterSession(
            conn.link,
            f.store,
            accepted.profile,
            settings=f.session,
            now=f.now,
            source="session",
            meter=accepted.meter,
        )
        conn.link.on_notification = lambda _a, n: self._later_push(n)
        batches: list[Ingest] = []
        try:
            if not await self._management(session, accepted, claimed):
                return
            frame, marks = accepted.carried, accepted.marks
            if claimed:
                # what the commands read, stored at once (the valve's state on the pages
                # does not wait for the plan's reads)
                await self._store(await session.run_commands(claimed, deadline, f.reactor))
                if f.session.read_plan:  # what the commands logged: the counters say
                    frame = await read_counters(session, frame)
                    due = due_now(accepted.profile, marks, f.now(), frame)
            batches.append(await run_plan(session, due, marks, deadline, f.reactor, frame))
            await session.close()
        except SacError as exc:
            conn.read, conn.skipped = tuple(session.read), tuple(session.skipped)
            await session.abandon()
            await self._requeue(claimed, str(exc))
            await self._store(merge(batches))
            if not claimed:  # the push is stored: acknowledged, the rest of the plan stays due
                self.log.warn("meter {ldn}: read plan stopped: {e}", ldn=conn.ldn, e=exc)
                self._end(_In.READ, "stored")
                return
            timeout = isinstance(exc, ResponseTimeout)
            self._end(_In.FAILED, "response-timeout" if timeout else "session-failed", str(exc))
            return
        conn.read, conn.skipped = tuple(session.read), tuple(session.skipped)
        await self._store(merge(batches))
        self._end(_In.RAN if claimed else _In.READ, "commands" if claimed else "read")

    async def _management(
        self, session: MeterSession, accepted: Accepted, claimed: list[Command]
    ) -> bool:
        """Open the Management association from the meter's counter: the frame's (inside
        the authenticated frame: proven), else the Public client's (a hint).  False when the
        meter answered as another."""
        assert accepted.meter is not None
        fc = accepted.frame_counter
        proven = fc is not None
        if fc is None:
            ldn, fc = await session.identify()
            if ldn != accepted.meter.ldn:
                await self._requeue(claimed, "the meter answered with another LDN")
                why = f"LDN {ldn!r} read, {accepted.meter.ldn!r} pushed"
                self._end(_In.OTHER_LDN, "ldn-mismatch", why)
                return False
        self._go(_In.IDENTIFIED)
        await session.open_management(fc, proven=proven)
        self._go(_In.OPENED)
        return True

    def _later_push(self, notification: Any) -> None:
        self.log.info("meter {ldn}: a second push in one session is ignored", ldn=self.conn.ldn)

    async def _store(self, batch: Ingest) -> None:
        if not (batch.readings or batch.events or batch.statuses or batch.plan_marks):
            return
        try:
            await self.f.store.readings.ingest(batch)
        except SacError as exc:
            self.log.warn("meter {ldn}: session values not stored: {e}", ldn=self.conn.ldn, e=exc)

    async def _requeue(self, claimed: list[Command], why: str) -> None:
        await requeue(self.f.store, claimed, why, attempts=self.f.session.command_attempts)


class PushFactory(PushListener):
    """The push listener whose connections run :class:`PushSession`, each one's record kept
    in ``connections``."""

    log = Logger()

    def __init__(
        self,
        acquisition: Acquisition,
        store: PushSessionStore,
        *,
        reactor: Any,
        settings: ListenerSettings = DEFAULT_LISTENER,
        session: SessionSettings = DEFAULT_SESSION,
        metrics: Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        connections: ConnectionLog | None = None,
    ) -> None:
        super().__init__(
            self._session,
            reactor=reactor,
            settings=settings,
            metrics=metrics if metrics is not None else acquisition.metrics,
            last_writes=acquisition.store_timeout + 1,
        )
        self.acquisition = acquisition
        self.store = store
        self.session = session
        self.now = now
        self.connections = connections  # where each session's record goes (None: nowhere)

    def _session(self, connection: IPushConnection) -> Any:
        return PushSession(self, connection).run()

    def session_ended(self, protocol: Any, seconds: float) -> None:
        """The connection's record, to the connections' log (gathered, stored later)."""
        if self.connections is None:
            return
        try:
            why = protocol.problem or protocol.note
            self.connections.record(
                Connection(
                    protocol.ldn,
                    self.now() - dt.timedelta(seconds=seconds),
                    protocol.peer,
                    "push",
                    protocol.outcome,
                    round(seconds * 1000),
                    protocol.read,
                    protocol.skipped,
                    why or None,
                )
            )
        except Exception:  # a record lost, never the session
            self.log.failure("push session from {peer}: not recorded", peer=protocol.peer)


class PushDatagramProtocol(WrapperDatagrams):
    """DATA-NOTIFICATIONs over UDP: one wrapper PDU a datagram, stored (or spooled); no
    answer, no session."""

    log = Logger()

    def __init__(
        self,
        acquisition: Acquisition,
        *,
        max_pdu: int = 4096,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(max_pdu=max_pdu)
        self.acquisition = acquisition
        self.now = now

    def pduReceived(self, pdu: WrapperPdu, host: str) -> None:
        d = Deferred.fromCoroutine(self.acquisition.push(pdu.apdu, host, self.now()))
        d.addErrback(self._failed, host)

    def malformed(self, host: str, error: SacError) -> None:
        self.acquisition.metrics.count("sac_push_rejected_total", reason="malformed")
        self.log.warn("UDP push from {host}: a bad datagram: {e}", host=host, e=error)

    def _failed(self, failure: Any, host: str) -> None:
        if failure.check(PushRejected, StoreUnavailable):
            self.log.warn("UDP push from {host} refused: {e}", host=host, e=failure.value)
            return
        self.log.failure("UDP push from {host}: unexpected error", failure, host=host)
