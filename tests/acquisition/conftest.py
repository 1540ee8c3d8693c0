"""A SAC (store, acquisition, push listener) and simulated meters, on real loopback TCP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.logger import globalLogPublisher

from sac.profiles import discover_profiles
from sac.protocols.push import ListenerSettings
from sac.services.acquisition import Acquisition
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
    """The SAC's acquisition side on a free port of 127.0.0.1."""

    def __init__(self, store: Store, **kw: Any) -> None:
        settings = kw.pop("listener", ListenerSettings(response_timeout=3.0))
        self.store = store
        self.acquisition = Acquisition(store, REGISTRY, reactor=reactor, **kw)
        self.factory = PushFactory(
            self.acquisition,
            store,
            reactor=reactor,
            settings=settings,
            session=SessionSettings(name="sac-test"),
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
    "failures_logged",
    "make_fleet",
    "provision",
    "push_once",
    "started",
    "utc",
]
