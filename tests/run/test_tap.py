"""The whole SAC as one service (sac.tap.SacService), in this process: started from a
configuration, serving the web and meters' pushes, stopped gracefully."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher

from sac.config import load_config
from sac.errors import ConfigurationError
from sac.tap import SacService
from tests.acquisition.conftest import make_fleet, provision, push_once
from tests.promtext import metric
from tests.store.conftest import MASTER, Backend, backend, postgres  # noqa: F401 -- fixtures


def config_for(backend: Backend, tmp_path: Path, **env: str) -> Any:  # noqa: F811
    address = backend.dsn if backend.kind == "postgresql" else f"sqlite:{backend.path}"
    base = {
        "SAC_MASTER_KEY": MASTER.secret.hex(),
        "SAC_STORE_ADDRESS": address,
        "SAC_STORE_CONNECTIONS": "2",
        "SAC_PUSH_LISTEN": "tcp:0:interface=127.0.0.1",
        "SAC_PUSH_SPOOL": str(tmp_path / "spool"),
        "SAC_WEB_LISTEN": "tcp:0:interface=127.0.0.1",
        "SAC_WEB_SECURE_COOKIES": "no",
        "SAC_SAC_NAME": "sac-under-test",
    }
    return load_config(None, {**base, **env})


class Events:
    """The log events of a test."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def __enter__(self) -> Events:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def formats(self) -> list[str]:
        return [e.get("log_format") or "" for e in self.events]

    def with_format(self, start: str) -> list[dict[str, Any]]:
        return [e for e in self.events if (e.get("log_format") or "").startswith(start)]


async def start(config: Any) -> SacService:
    service = SacService(config, reactor=reactor, exit_on_failure=False)
    service.startService()
    return await service.ready


def port_of(ports: list[Any]) -> int:
    return int(ports[0].getHost().port)


@pytest_twisted.ensureDeferred
async def test_one_service_serves_web_and_pushes_then_stops_cleanly(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Events() as log:
        service = await start(config_for(backend, tmp_path))
        try:
            assert {child.name for child in service} == {
                "poll scheduler",
                "command queue",
                "connections' record",
            }
            web = f"http://127.0.0.1:{port_of(service.web_ports)}"
            answer = await treq.get(f"{web}/health")
            assert answer.code == 200
            health = json.loads(await answer.content())
            assert health["ok"] is True
            assert set(health["components"]) >= {"store", "push listener", "spool"}
            assert b"Sign in" in await (await treq.get(f"{web}/login")).content()
            fleet = make_fleet(2)
            await provision(service.store, fleet)
            for m in fleet.meters:
                await push_once(port_of(service.push_ports), m)
            stored = await service.store.meters.get(fleet.meters[0].ldn)
            assert stored is not None and stored.last_connection is not None
            await service.connections.flush()  # each session's record, as the stop does
            for m in fleet.meters:
                [record] = await service.store.connections.recent(m.ldn)
                # the first push of a meter: its read plan was due, and read
                assert (record.kind, record.outcome) == ("push", "read")
                assert "battery_autonomy" in record.read
            # no error logged so far; then one, and /metrics says so
            metrics = await (await treq.get(f"{web}/metrics")).text()
            assert metric(metrics, "sac_log_errors_total", level="error") == 0
            Logger(namespace="tests").error("an error somewhere in the process")
            metrics = await (await treq.get(f"{web}/metrics")).text()
            assert metric(metrics, "sac_log_errors_total", level="error") == 1
            # the store's transactions are timed by name (the schema's check at start)
            assert metric(metrics, "sac_store_seconds_count", transaction="migrate") == 1
            assert metric(metrics, "sac_store_seconds_sum", transaction="migrate") > 0
        finally:
            await service.stopService()
    sessions = log.with_format("push session from")
    assert [(e["ldn"], e["outcome"]) for e in sessions] == [(m.ldn, "read") for m in fleet.meters]
    assert all(isinstance(e["ms"], int) for e in sessions)
    assert log.with_format("SAC stopped cleanly")
    assert not [e for e in log.events if e.get("log_failure") is not None]


@pytest_twisted.ensureDeferred
async def test_a_stop_waits_for_sessions_in_flight_then_cuts_them(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A meter that connected and says nothing holds the stop for stop_grace, then is cut;
    the store closes after that, not before."""
    service = await start(config_for(backend, tmp_path, SAC_SAC_STOP_GRACE="0.5"))
    push_port = port_of(service.push_ports)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", push_port)
    silent = Protocol()
    lost: Deferred[None] = Deferred()
    silent.connectionLost = lambda reason=None: lost.callback(None)  # type: ignore[method-assign]
    await connectProtocol(endpoint, silent)
    while not service.push.active:  # the SAC has accepted it
        await deferLater(0.01)
    with Events() as log:
        await service.stopService()
    await lost
    (stopped,) = log.with_format("SAC stopped cleanly")
    assert stopped["cut"] == 1
    (session,) = log.with_format("push session from")
    assert session["outcome"] == "stopping" and session["problem"] == "the SAC is stopping"
    # nothing listens any more
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", push_port), timeout=2),
    ):
        pass


@pytest_twisted.ensureDeferred
async def test_a_port_taken_stops_the_start_with_one_clear_error(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = config_for(backend, tmp_path, SAC_WEB_LISTEN=f"tcp:{port}:interface=127.0.0.1")
        service = SacService(config, reactor=reactor, exit_on_failure=False)
        with Events() as log:
            service.startService()
            with pytest.raises(ConfigurationError, match=f"listener 'tcp:{port}:"):
                await service.ready
            await service.stopService()
    finally:
        taken.close()
    (failed,) = log.with_format("SAC not started")
    assert "address already in use" in str(failed["error"]).lower()
    assert log.with_format("SAC stopped cleanly")  # what had started was closed


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_health_says_503_when_the_store_does_not_answer(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    service = await start(config_for(backend, tmp_path))
    web = f"http://127.0.0.1:{port_of(service.web_ports)}/health"
    try:
        await service._check_store()
        assert (await treq.get(web)).code == 200
        await service.store.close()  # as good as the database gone
        service.clock = clock = Clock()  # the probe's 5 s timeout, without waiting for it
        with Events() as log:
            checking = Deferred.fromCoroutine(service._check_store())
            clock.advance(5.0)
            assert checking.called  # an answer, or none, within the probe's 5 s
            await checking
        answer = await treq.get(web)
        assert answer.code == 503
        assert json.loads(await answer.content()) == {
            "ok": False,
            "components": {
                "poll scheduler": True,
                "push listener": True,
                "spool": True,
                "store": False,
            },
        }
        assert log.with_format("store: no answer to the health check")
    finally:
        service.store.close = lambda: succeed(None)  # closed already
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stop_hands_back_the_commands_of_a_session_it_cuts(
    backend: Backend,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A meter pushes, the SAC claims its valve close and asks, the meter never answers; a
    stop cuts it after stop_grace (before the 10 s response timeout): the push is stored, the
    command is pending again, and the next SAC runs it."""
    from sac.store import Actor, CommandState
    from tests.acquisition.test_faults import Mute

    config = config_for(backend, tmp_path, SAC_SAC_STOP_GRACE="0.3")
    service = await start(config)
    fleet = make_fleet(1)
    [m] = fleet.meters
    await provision(service.store, fleet)
    command = await service.store.commands.queue(m.ldn, "valve-close", {}, Actor("olivia"))
    mute = Mute(m, push_template=m.profile.push_templates[0], reactor=reactor)
    lost: Deferred[Any] = Deferred()
    mute.connectionLost = lambda reason=None: lost.callback([reason])  # type: ignore[method-assign]
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(service.push_ports))
    await connectProtocol(endpoint, mute)
    while (await service.store.commands.get(command.id)).state is not CommandState.SENT:
        await deferLater(0.02)
    with Events() as log:
        await service.stopService()
    [reason] = await lost
    assert not reason.check(ConnectionDone)  # a reset: the meter knows it was not finished
    (session,) = log.with_format("push session from")
    assert session["outcome"] == "stopping" and session["ldn"] == m.ldn
    again = SacService(config_for(backend, tmp_path), reactor=reactor, exit_on_failure=False)
    again.startService()
    await again.ready
    try:
        assert (await again.store.commands.get(command.id)).state is CommandState.PENDING
        assert await again.store.readings.count() > 0  # the push itself was stored first
        await push_once(port_of(again.push_ports), m)
        assert (await again.store.commands.get(command.id)).state is CommandState.DONE
    finally:
        await again.stopService()
