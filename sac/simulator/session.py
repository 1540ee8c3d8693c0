"""The Twisted side of a simulated meter: one protocol for one connection, push or listen.

On one TCP connection a meter serves two clients, told apart by the wrapper's source wPort:
the Public client (16: AARQ, GET, RLRQ, no ciphering) and the Management client (1: a
pre-established association, general-glo-ciphering, strict invocation counters).  In push
mode the meter speaks first: a ciphered DATA-NOTIFICATION carrying one of its profile's
push frames, then it answers requests until the SAC closes, the inactivity timeout passes
or the session budget ends.  In listen mode it waits for the SAC to speak.

A malformed frame or a request for an unknown client closes that connection with a log
line; the meter's other connections and the reactor go on.  So does a failure of the
simulator itself (a push it cannot build), logged with its traceback and flagged ``failed``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from sac.dlms.axdr import OctetString
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.server import ServerAssociation
from sac.dlms.wrapper import WrapperFramer
from sac.errors import SacError
from sac.simulator.meter import MANAGEMENT, PUBLIC, SimulatedMeter

__all__ = ["MeterProtocol", "MeterServerFactory"]

INACTIVITY = 30.0  # seconds (TV2's inactivity_timeout)
MAX_APDU = 2048


def _security_of(meter: SimulatedMeter) -> SecurityContext:
    """The ciphering of the meter's Management client, from the counters the meter keeps."""
    return SecurityContext(
        Suite0Cipher(meter.key),
        meter.system_title,
        peer_system_title=meter.sac_system_title,
        invocation_counter=meter.our_counter,
        peer_invocation_counter=meter.sac_counter,
        # the meter's own APDUs carry its title (as TV1's real pushes do); it accepts the
        # SAC's with or without one (it knows the SAC's title in advance)
    )


class MeterProtocol(Protocol):
    log = Logger()

    def __init__(
        self,
        meter: SimulatedMeter,
        *,
        push_template: int | None = None,
        inactivity: float = INACTIVITY,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.meter = meter
        self.push_template = push_template
        self.inactivity = inactivity
        self.reactor = reactor
        self.framer = WrapperFramer(MAX_APDU, sources={MANAGEMENT, PUBLIC}, destinations={1})
        self.public = ServerAssociation(meter, PUBLIC, 1, max_receive_pdu=MAX_APDU)
        profile = meter.profile
        self.security = _security_of(meter)
        self.management = ServerAssociation(
            meter,
            MANAGEMENT,
            1,
            security=self.security,
            pre_established=True,
            max_receive_pdu=profile.max_pdu,
            client_max_receive_pdu=profile.max_pdu,
        )
        self._timers: list[Any] = []
        self._idle: Any = None
        self.requests = 0  # requests served in this session
        self.failed = False  # the simulator failed (not the SAC, not the network)

    def connectionMade(self) -> None:
        budget = self.reactor.callLater(self.meter.profile.session_budget, self._end, "budget")
        self._timers.append(budget)
        self._touch()
        if self.push_template is not None:
            try:
                self.meter.advance()
                buffer = self.meter.compact_buffer(self.push_template)
                self.management.notify(OctetString(buffer))
            except Exception:  # the simulator's own fault: said, whatever the log level
                self._failed(f"cannot build its push (template {self.push_template})")
                return
            self._flush(self.management)

    def _failed(self, what: str) -> None:
        """A failure inside the simulator: logged with its traceback (at the critical level,
        so ``sac-simulate`` shows it without --verbose), counted, and the connection closed."""
        self.failed = True
        self.log.failure("meter {ldn}: {what}", ldn=self.meter.ldn, what=what)
        self.transport.abortConnection()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.inactivity)
        else:
            self._idle = self.reactor.callLater(self.inactivity, self._end, "inactivity")

    def _end(self, why: str) -> None:
        self.log.debug("meter {ldn}: session ends ({why})", ldn=self.meter.ldn, why=why)
        self.transport.loseConnection()

    def _flush(self, association: ServerAssociation) -> None:
        out = association.data_to_send()
        self._save_counters()
        if out:
            self.transport.write(out)

    def _save_counters(self) -> None:
        """The counters live in the meter (its non-volatile memory), not the session."""
        self.meter.our_counter = self.security.invocation_counter
        self.meter.sac_counter = self.security.peer_invocation_counter

    def dataReceived(self, data: bytes) -> None:
        self._touch()
        try:
            for pdu in self.framer.feed(data):
                association = self.management if pdu.source == MANAGEMENT else self.public
                association.receive_pdu(pdu)
                self.requests += 1
                self._flush(association)
        except SacError as exc:
            self.log.warn(
                "meter {ldn}: connection closed on a bad frame: {error}",
                ldn=self.meter.ldn,
                error=exc,
            )
            self.transport.abortConnection()
        except Exception:  # the simulator's own fault
            self._failed("cannot answer the SAC")

    def connectionLost(self, reason: Any = None) -> None:
        self._save_counters()
        for timer in [*self._timers, self._idle]:
            if timer is not None and timer.active():
                timer.cancel()


class MeterServerFactory(Factory):
    """Listen mode: the SAC connects to the meter (one port per meter, as one IP each)."""

    noisy = False

    def __init__(self, meter: SimulatedMeter, reactor: Any = None) -> None:
        self.meter = meter
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> MeterProtocol:
        protocol = MeterProtocol(self.meter, reactor=self.reactor)
        protocol.factory = self
        return protocol
