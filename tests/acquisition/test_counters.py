"""Invocation counters against a forged peer (issue 18, item 1).

Anyone on the meters' network can answer the SAC's ciphered request with an *unciphered*
exception-response, or forge the Public client's read of the frame counter.  What that says
is a hint: it may move our counter once a session, inside a window above the counter the
meter proved by authenticated data, never near 2^32; and it never fails a command for good.
The genuine meter's next session must still run the queued valve close.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from sac.dlms.wrapper import WrapperPdu
from sac.services.poll import PollFailed, poll_meter
from sac.services.session import SessionSettings
from sac.store import Actor, CommandState
from sac.store.keycsv import parse_key_csv
from tests.acquisition.conftest import REGISTRY, Backend, Sac, push_once, started
from tests.acquisition.forger import Forger, Rewrite, first_ciphered_request
from tests.acquisition.test_poll import _listening, poll_then_stop

OPERATOR = Actor("olivia", "192.0.2.9")
SETTINGS = SessionSettings(name="counters-test")
FAR = 1 << 24  # well beyond any window: a counter a forged answer must not reach
FORGED = {
    # service error 6 (invocation counter), "expects" 2^32-1
    "counter-2^32-1": bytes.fromhex("d80106ffffffff"),
    # state error 1 (service not allowed): a refusal anyone could send
    "service-not-allowed": bytes.fromhex("d80101"),
    # a confirmed-service-error, unciphered, refusing the request
    "confirmed-service-error": bytes.fromhex("0e050302"),
    # bytes that do not decode: the SAC cuts that connection
    "malformed": bytes.fromhex("d80106ffff"),
}


async def forged_session(sac: Sac, port: int, meter: Any, answer: bytes) -> None:
    """One push session of ``meter`` through a forger that answers the SAC's first ciphered
    request with ``answer``; returns once the SAC's side of the session has ended."""
    sessions: list[Any] = []
    build = sac.factory.buildProtocol

    def tracked(addr: Any) -> Any:
        protocol = build(addr)
        sessions.append(protocol)
        return protocol

    sac.factory.buildProtocol = tracked  # type: ignore[method-assign]
    forger = Forger(port, first_ciphered_request(answer))
    try:
        await push_once(await forger.listen(), meter)
    finally:
        await forger.stop()
        sac.factory.buildProtocol = build  # type: ignore[method-assign]
    assert forger.forged == 1
    for protocol in sessions:
        ended: Deferred[None] = Deferred()
        protocol.running.addBoth(lambda result, d=ended: (d.callback(None), result)[1])
        await ended


@pytest.mark.parametrize("forged", list(FORGED))
@pytest_twisted.ensureDeferred
async def test_a_forged_unciphered_answer_neither_burns_counters_nor_fails_the_valve_close(
    backend: Backend, sacs: list[Sac], forged: str
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    await forged_session(sac, port, m, FORGED[forged])
    back = await store.commands.get(command.id)
    # back in the queue, its attempt counted, the reason shown: not failed for good
    assert back.state is CommandState.PENDING, back.result
    assert back.attempts == 1 and back.result
    ours, _ = await store.counters.last(m.ldn, 1)
    assert ours < FAR  # no jump towards 2^32
    assert m.valve_state != 0  # the forger kept the command from the meter
    # the genuine meter's next session runs the close
    await push_once(port, m)
    done = await store.commands.get(command.id)
    assert done.state is CommandState.DONE, done.result
    assert m.valve_state == 0
    after = await store.counters.state(m.ldn, 1)
    assert after.proven == m.sac_counter  # what the meter answered, authenticated


def _forge_public_frame_counter(value: int):
    """Answer the Public client's GET of the frame counter (a double-long-unsigned) with
    ``value``; pass the rest."""

    def rule(direction: str, pdu: WrapperPdu) -> Rewrite | None:
        apdu = pdu.apdu
        # get-response-normal, data (tag 0x00), double-long-unsigned (tag 0x06), to wPort 16
        to_public = direction == "to-sac" and pdu.destination == 16
        if to_public and apdu[:2] == b"\xc4\x01" and len(apdu) == 9 and apdu[3:5] == b"\x00\x06":
            return Rewrite(apdu[:5] + struct.pack(">I", value))
        return None

    return rule


@pytest_twisted.ensureDeferred
async def test_a_forged_public_frame_counter_is_a_hint_the_genuine_meter_outlives(
    backend: Backend,
) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    forger = Forger(ports[0], _forge_public_frame_counter(0xFFFFFFF0), near="sac")
    relay = await forger.listen()
    try:
        await poll_meter(
            m.ldn, f"127.0.0.1:{relay}", store=store, registry=REGISTRY, reactor=reactor,
            settings=SETTINGS,
        )  # fmt: skip
        assert forger.forged == 1
        assert (await store.counters.last(m.ldn, 1))[0] < FAR
        # the genuine meter, dialled directly, runs a valve close in its next poll
        command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
        await poll_meter(
            m.ldn, f"127.0.0.1:{ports[0]}", store=store, registry=REGISTRY, reactor=reactor,
            settings=SETTINGS,
        )  # fmt: skip
        done = await store.commands.get(command.id)
        assert done.state is CommandState.DONE, done.result
        assert m.valve_state == 0
    finally:
        await forger.stop()
        await fleet.stop()


@pytest.mark.parametrize("via", ["public-frame-counter", "exception-response"])
@pytest_twisted.ensureDeferred
async def test_a_genuine_meter_ahead_of_us_within_the_window_is_followed(
    backend: Backend, via: str
) -> None:
    """The case hints exist for: the meter has seen more of our counters than the store
    holds (a store restored from a backup, another head-end).  The Public client's frame
    counter says so -- or, when that read is lost, the meter's unciphered
    exception-response naming the counter it expects: the session moves there once, the
    command runs, and the counter is proven by the meter's authenticated answers."""
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    m.sac_counter = 5_000
    target = ports[0]
    forger = Forger(ports[0], _forge_public_frame_counter(0), near="sac")
    if via == "exception-response":
        target = await forger.listen()
    command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    try:
        await poll_meter(
            m.ldn, f"127.0.0.1:{target}", store=store, registry=REGISTRY, reactor=reactor,
            settings=SETTINGS,
        )  # fmt: skip
    finally:
        await forger.stop()
        await fleet.stop()
    assert forger.forged == (via == "exception-response")
    done = await store.commands.get(command.id)
    assert done.state is CommandState.DONE, done.result
    assert m.valve_state == 0
    assert (await store.counters.state(m.ldn, 1)).proven == m.sac_counter > 5_000


@pytest_twisted.ensureDeferred
async def test_a_hint_beyond_the_window_is_refused_and_nothing_moves(backend: Backend) -> None:
    store, fleet, ports = await _listening(backend)
    [m] = fleet.meters
    m.sac_counter = SETTINGS.counter_window + 10_000  # far beyond anything proven
    command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    with pytest.raises(PollFailed, match=r"not followed.*window"):
        await poll_then_stop(store, fleet, m.ldn, ports[0])
    assert (await store.counters.state(m.ldn, 1)).ours < SETTINGS.counter_window
    assert (await store.commands.get(command.id)).state is CommandState.PENDING


@pytest_twisted.ensureDeferred
async def test_a_command_given_up_after_its_attempts_says_why(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, sac, port = await started(backend, sacs)
    [m] = fleet.meters
    command = await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    limit = sac.factory.session.command_attempts
    for _ in range(limit):
        await forged_session(sac, port, m, FORGED["service-not-allowed"])
    failed = await store.commands.get(command.id)
    assert failed.state is CommandState.FAILED
    assert f"given up after {limit} attempts" in (failed.result or "")


# --- keys and counters -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_new_keys_restart_the_counters_and_the_same_keys_keep_them(
    backend: Backend, sacs: list[Sac]
) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    await push_once(port, m)
    used = await store.counters.state(m.ldn, 1)
    assert used.ours > 0 and used.theirs is not None
    keys = await store.keys.get(m.ldn, 1)
    assert keys is not None
    await store.keys.set(m.ldn, 1, keys.ek, keys.ak, by=OPERATOR)  # the same keys again
    assert await store.counters.state(m.ldn, 1) == used
    rows, errors = parse_key_csv(fleet.keys_csv())  # the same keys by CSV, replacing
    assert not errors
    await store.keys.import_rows(rows, replace=True)
    assert await store.counters.state(m.ldn, 1) == used
    await store.keys.set(m.ldn, 1, bytes(16), bytes(range(16)), by=OPERATOR)  # new keys
    fresh = await store.counters.state(m.ldn, 1)
    assert (fresh.ours, fresh.proven, fresh.theirs) == (0, 0, None)
    await store.keys.import_rows(rows, replace=True)  # the meter's keys back: new again
    assert (await store.counters.state(m.ldn, 1)).ours == 0


@pytest_twisted.ensureDeferred
async def test_resetting_a_meters_counters_is_audited(backend: Backend, sacs: list[Sac]) -> None:
    store, fleet, _sac, port = await started(backend, sacs)
    [m] = fleet.meters
    await store.commands.queue(m.ldn, "valve-close", {}, OPERATOR, priority=20)
    await push_once(port, m)
    assert (await store.counters.state(m.ldn, 1)).ours > 0
    assert await store.counters.reset(m.ldn, by=OPERATOR) == 1
    assert (await store.counters.state(m.ldn, 1)).ours == 0
    [line, *_] = await store.audit.log(5)
    assert (line.actor, line.action, line.target) == ("olivia", "reset counters", m.ldn)
