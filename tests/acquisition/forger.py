"""An attacker on the meters' network: a TCP relay between a meter and the SAC that sees
every wrapper PDU and may answer in the other's place with bytes of its own (unciphered,
since it has no key).

``Forger(rule)`` relays both ways; ``rule(direction, pdu)`` returns None to pass the PDU on,
``Reply(apdu)`` to drop it and answer its sender in the addressee's name, or
``Rewrite(apdu)`` to pass on other bytes in its place.  ``direction`` is ``"to-meter"`` or
``"to-sac"``.
The relay listens on 127.0.0.1 and dials ``target`` for each connection it takes: in front
of the SAC's push port (``near="meter"``: meters call the relay) or in front of a listening
meter (``near="sac"``: the SAC's polls dial the relay).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from sac.dlms.wrapper import WrapperFramer, WrapperPdu, encode_wrapper


@dataclass(frozen=True, slots=True)
class Reply:
    apdu: bytes


@dataclass(frozen=True, slots=True)
class Rewrite:
    apdu: bytes


Rule = Callable[[str, WrapperPdu], Reply | Rewrite | None]

__all__ = ["Forger", "Reply", "Rewrite", "Rule", "first_ciphered_request"]

CIPHERED_TAGS = {0xDB, 0xDF, 0xC8, 0xC9, 0xCA, 0xCB}  # general-glo/ded, glo-get/set/action


def first_ciphered_request(apdu: bytes) -> Rule:
    """Answer the SAC's first ciphered request with ``apdu``, pass everything else."""
    done = False

    def rule(direction: str, pdu: WrapperPdu) -> Reply | None:
        nonlocal done
        if direction == "to-meter" and not done and pdu.apdu[:1] and pdu.apdu[0] in CIPHERED_TAGS:
            done = True
            return Reply(apdu)
        return None

    return rule


class _Side(Protocol):
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.framer = WrapperFramer(0xFFFF)

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.framer.feed(data):
            self.relay.carry(self, pdu)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.lost(self)


class _Relay:
    def __init__(self, forger: Forger) -> None:
        self.forger = forger
        self.near: _Side | None = None  # the connection the relay accepted
        self.far: _Side | None = None  # the one it dialled
        self.held: list[bytes] = []  # from the near side, before the far one is up

    def carry(self, side: _Side, pdu: WrapperPdu) -> None:
        other = self.far if side is self.near else self.near
        from_meter = (side is self.near) == (self.forger.near == "meter")
        direction = "to-sac" if from_meter else "to-meter"
        forged = self.forger.rule(direction, pdu)
        if forged is not None:
            self.forger.forged += 1
        if isinstance(forged, Reply):
            side.transport.write(encode_wrapper(pdu.destination, pdu.source, forged.apdu))
            return
        if isinstance(forged, Rewrite):
            pdu = WrapperPdu(pdu.source, pdu.destination, forged.apdu)
        data = pdu.to_bytes()
        if other is None or other.transport is None:
            self.held.append(data)
        else:
            other.transport.write(data)

    def lost(self, side: _Side) -> None:
        other = self.far if side is self.near else self.near
        if other is not None and other.transport is not None:
            other.transport.loseConnection()


class Forger:
    """The relay: ``await listen()`` gives its port; connections go on to ``target``."""

    def __init__(self, target: int, rule: Rule, *, near: str = "meter") -> None:
        self.target = target
        self.rule = rule
        self.near = near
        self.forged = 0
        self.port: Any = None

    async def listen(self) -> int:
        forger = self

        class Accepting(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                relay = _Relay(forger)
                relay.near = _Side(relay)
                relay.near.connectionMade = lambda: forger._dial(relay)  # type: ignore[method-assign]
                return relay.near

        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Accepting())
        return self.port.getHost().port

    def _dial(self, relay: _Relay) -> None:
        side = _Side(relay)

        def up(_: Any) -> None:
            relay.far = side
            for data in relay.held:
                side.transport.write(data)
            relay.held.clear()

        def failed(_: Any) -> None:
            relay.near.transport.abortConnection()  # type: ignore[union-attr]

        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.target), side)
        d.addCallbacks(up, failed)

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
