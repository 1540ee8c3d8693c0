"""A SAC (store, acquisition, push listener) and simulated meters, on real loopback TCP; or
in memory (:class:`Wire`), the listener's timers on a Clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from sac.profiles import discover_profiles
from sac.protocols.push import ListenerSettings
from sac.services.acquisition import Acquisition
from sac.services.connections import ConnectionLog
from sac.services.push import PushFactory
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet
from sac.simulator.session import MeterProtocol
from sac.store import NewMeter
from sac.store.connector import Store
from sac.store.keycsv import parse_key_csv
from tests.store.conftest import Backend, backend, postgres  # noqa: F401 -- fixtures

REGISTRY = discover_profiles().registry


class Sac:
    """The SAC's acquisition side on a free port of 127.0.0.1.  Its push sessions read no
    read plan unless ``read_plan=True`` (the tests of the plan, tests/acquisition/
    test_read_plan.py): the others see what a push alone does."""

    def __init__(self, store: Store, *, read_plan: bool = False, **kw: Any) -> None:
        settings = kw.pop("listener", ListenerSettings(response_timeout=3.0))
        self.store = store
        self.acquisition = Acquisition(store, REGISTRY, reactor=reactor, **kw)
        # each session's record, as the SAC keeps it (gathered for 10 ms here, not 100)
        self.connections = ConnectionLog(store, reactor=reactor, every=0.01)
        self.factory = PushFactory(
            self.acquisition,
            store,
            reactor=reactor,
            settings=settings,
            session=SessionSettings(name="sac-test", read_plan=read_plan),
            connections=self.connections,
        )
        self.port: Any = None

    async def listen(self) -> int:
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        return self.port.getHost().port

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        for protocol in list(self.factory.active):
            protocol.transport.abortConnection()
        await self.connections.flush()


def on_clock(sac: Sac, settings: ListenerSettings) -> tuple[PushFactory, Clock]:
    """A second push listener of ``sac`` (its acquisition, store and metrics) whose sessions'
    timers run on a Clock; the store still answers through the reactor."""
    clock = Clock()
    factory = PushFactory(
        sac.acquisition,
        sac.store,
        reactor=clock,
        settings=settings,
        session=SessionSettings(name="sac-test", read_plan=False),
    )
    return factory, clock


class Wire:
    """One connection to a push listener in memory: the SAC's protocol and, if given, the
    meter's, each on a StringTransport, pumped by hand (:meth:`pump`).  Its end is delivered
    to both as the reactor would: a reset if the SAC aborted it, else a clean close."""

    def __init__(self, factory: PushFactory, meter: Protocol | None = None) -> None:
        peer = IPv4Address("TCP", "192.0.2.9", 40001)
        self.sac = factory.buildProtocol(peer)
        self.sac_side = StringTransport(peerAddress=peer)
        self.meter, self.meter_side = meter, StringTransport()
        self.sac.makeConnection(self.sac_side)
        if meter is not None:
            meter.makeConnection(self.meter_side)
        self.sent = 0  # bytes from the meter's side
        self.reason: Failure | None = None

    def send(self, data: bytes) -> None:
        """Bytes from the meter's side (without a meter protocol)."""
        self.sent += len(data)
        self.sac.dataReceived(data)

    @property
    def cut(self) -> bool:
        """The SAC reset the connection (abortConnection)."""
        return self.sac_side.disconnected

    def pump(self) -> None:
        """Moves what each side wrote to the other; delivers the end once the SAC closed."""
        while self.reason is None:
            up, down = self.meter_side.value(), self.sac_side.value()
            self.meter_side.clear()
            self.sac_side.clear()
            if up:
                self.send(up)
            if down and self.meter is not None:
                self.meter.dataReceived(down)
            if up or down:
                continue
            if self.sac_side.disconnecting or self.meter_side.disconnecting:
                reason = ConnectionAborted() if self.cut else ConnectionDone()
                self.reason = Failure(reason)
                self.sac.connectionLost(self.reason)
                if self.meter is not None:
                    self.meter.connectionLost(self.reason)
            return

    async def until(self, condition: Any, what: str, timeout: float = 20.0) -> None:
        """Pumps (the store answering through the reactor meanwhile) until ``condition()``."""
        for _ in range(int(timeout / 0.005)):
            self.pump()
            if condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        raise AssertionError(f"never happened: {what}")


async def provision(store: Store, fleet: Fleet, **meter: Any) -> None:
    for m in fleet.meters:
        await store.meters.add(
            NewMeter(
                m.ldn, pdr=m.pdr, system_title=m.system_title, profile=fleet.profile.name, **meter
            )
        )
    rows, errors = parse_key_csv(fleet.keys_csv())
    assert not errors
    await store.keys.import_rows(rows)


def make_fleet(count: int = 1, profile: str = "uni-ts-11291-12-2", **kw: Any) -> Fleet:
    return Fleet(count, REGISTRY[profile], clock=reactor.seconds, reactor=reactor, **kw)


async def push_once(
    port: int, meter: Any, template: int | None = None, endpoint: Any = None
) -> MeterProtocol:
    """One push session of ``meter`` (to ``port`` of 127.0.0.1 over TCP, or through the
    client ``endpoint``); returns its protocol once the SAC has closed it."""
    protocol = MeterProtocol(
        meter, push_template=template or meter.profile.push_templates[0], reactor=reactor
    )
    ended: Deferred[Any] = Deferred()
    lost = protocol.connectionLost

    def on_lost(reason: Any = None) -> None:
        lost(reason)
        protocol.end_reason = reason
        ended.callback(None)

    protocol.connectionLost = on_lost  # type: ignore[method-assign]
    await connectProtocol(endpoint or TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    await ended
    return protocol


async def started(
    backend: Backend,  # noqa: F811 -- the fixture, passed in
    sacs: list[Sac],
    count: int = 1,
    **kw: Any,
):
    store = backend.make()
    await store.open()
    fleet = make_fleet(count)
    await provision(store, fleet)
    sac = Sac(store, **kw)
    sacs.append(sac)
    return store, fleet, sac, await sac.listen()


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


@contextmanager
def failures_logged() -> Iterator[list[Any]]:
    """The failures logged (anywhere in the process) while the block runs."""
    found: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            found.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield found
    finally:
        globalLogPublisher.removeObserver(observe)


@pytest.fixture
def sacs() -> Iterator[list[Sac]]:
    made: list[Sac] = []
    yield made
    for sac in made:
        pytest_twisted.blockon(Deferred.fromCoroutine(sac.stop()))


__all__ = [
    "Backend",
    "Path",
    "Sac",
    "Wire",
    "failures_logged",
    "make_fleet",
    "on_clock",
    "provision",
    "push_once",
    "started",
    "utc",
]
